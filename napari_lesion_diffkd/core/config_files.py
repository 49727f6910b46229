"""Config dataclasses <-> dicts and YAML / JSON files: the one place their keys are checked.

Every training recipe (``TrainConfig``, ``SamTrainConfig``, ``TsKdConfig``, ``SamSslConfig``)
is a dataclass whose fields are the config; these helpers give them the same
``from_dict`` / ``from_file`` behaviour: an unknown key is an error that names it (a typo
must not silently fall back to a default), and a file must hold a mapping.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def check_keys(cls: type, data: dict[str, Any], label: str) -> None:
    """ValueError naming the keys of ``data`` that are not fields of the dataclass ``cls``.

    Args:
        cls: a dataclass type.
        data: the would-be constructor arguments.
        label: what the config is, for the message (``"unknown <label> config keys"``).
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {label} config keys: {unknown}; known: {sorted(known)}")


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.json`` file, or in a YAML file (any other suffix; empty -> {}).

    Raises:
        OSError: the file cannot be read.
        ValueError: the file holds something other than a mapping.
    """
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got "
                         f"{type(data).__name__}")
    return data
