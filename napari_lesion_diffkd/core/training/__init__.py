"""Training loops as generators of progress events."""
