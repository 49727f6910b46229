"""Bounds on the numbers that size memory and time: bundle configs and CLI arguments.

Why: nothing used to check them. A bundle whose ``config.json`` said ``num_samples: 100000``
grew ``predict`` to 7 GB before failing, and an absurd ``input.size`` or network width
allocates before any error can say what is wrong. Each bound is generous (far above every
shipped model and recipe) but finite; a value outside it is one clear error line naming the
key, the value and the allowed range.

The bounds (inclusive):

======================  ===========  =================================================
key                     range        where
======================  ===========  =================================================
num_samples (K)         1 .. 256     ``sampler.num_samples``, ``predict --samples``
num_steps               1 .. 1000    ``sampler.num_steps``, ``predict --steps``
input size (S)          8 .. 2048    ``input.size``
channels                1 or 3       ``input.channels``
schedule timesteps      1 .. 100000  ``schedule.num_timesteps``
network widths / depth  1 .. 4096    integer ``network`` values and lists of them
======================  ===========  =================================================

Training recipes (``TrainConfig``) get the same bounds on the keys they share with a bundle
(``input_size``, ``image_channels``, ``sampler``, ``schedule``, ``network``) plus
``batch_size`` 1..4096, ``max_steps`` 0..10^7, ``val_samples`` 1..256, ``val_steps``
1..1000 and ``trajectory_noises`` 1..256 (:func:`check_train_config`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_SAMPLES = 256
MAX_STEPS = 1000
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 2048
ALLOWED_CHANNELS = (1, 3)
MAX_TIMESTEPS = 100_000
MAX_NETWORK_INT = 4096


class ConfigBoundsError(ValueError):
    """A config value or argument is out of its allowed range (the message names it)."""


def check_int(label: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an int when it is a whole number in ``[lo, hi]``.

    Args:
        label: what the value is, for the message (``"sampler.num_samples"``, ``"--samples"``).

    Raises:
        ConfigBoundsError: not a whole number (bools, strings, NaN and 2.5 are refused), or
            out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and (not math.isfinite(value) or value != int(value))):
        raise ConfigBoundsError(f"{label} must be a whole number in {lo}..{hi}, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ConfigBoundsError(f"{label} must be in {lo}..{hi}, got {int(value)}")
    return int(value)


def check_sampling_args(num_samples: int | None, num_steps: int | None,
                        prefix: str = "--") -> None:
    """Bounds of the per-call sampling overrides (``None`` = the model's default).

    Raises:
        ConfigBoundsError: naming ``{prefix}samples`` / ``{prefix}steps``.
    """
    if num_samples is not None:
        check_int(f"{prefix}samples", num_samples, 1, MAX_SAMPLES)
    if num_steps is not None:
        check_int(f"{prefix}steps", num_steps, 1, MAX_STEPS)


def _section(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = config.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigBoundsError(f"'{key}' must be a JSON object, got {type(value).__name__}")
    return value


def check_bundle_config(config: Mapping[str, Any]) -> None:
    """Check a diffusion/segmentation bundle config against the bounds in the module table.

    Only keys that are present are checked (older bundles lack some); their types must be
    right. Runs before the network is built, so nothing big is allocated first.

    Raises:
        ConfigBoundsError: the first offending key, e.g.
            ``sampler.num_samples must be in 1..256, got 100000``.
    """
    inp = _section(config, "input")
    if "size" in inp:
        size = inp["size"]
        sizes = size if isinstance(size, (list, tuple)) else [size]
        for s in sizes:
            check_int("input.size", s, MIN_INPUT_SIZE, MAX_INPUT_SIZE)
    if "channels" in inp:
        ch = check_int("input.channels", inp["channels"], 1, max(ALLOWED_CHANNELS))
        if ch not in ALLOWED_CHANNELS:
            raise ConfigBoundsError(f"input.channels must be one of {ALLOWED_CHANNELS}, got {ch}")
    sampler = _section(config, "sampler")
    if sampler.get("num_samples") is not None:
        check_int("sampler.num_samples", sampler["num_samples"], 1, MAX_SAMPLES)
    if sampler.get("num_steps") is not None:
        check_int("sampler.num_steps", sampler["num_steps"], 1, MAX_STEPS)
    schedule = _section(config, "schedule")
    if "num_timesteps" in schedule:
        check_int("schedule.num_timesteps", schedule["num_timesteps"], 1, MAX_TIMESTEPS)
    _check_network_ints(_section(config, "network"), "network")


def _check_network_ints(section: Mapping[str, Any], label: str) -> None:
    """Every integer (or list of integers, or nested mapping of them) in the network kwargs
    is a width, depth, stride or count: bound it so a typo cannot build a giant network."""
    for key, value in section.items():
        name = f"{label}.{key}"
        if isinstance(value, Mapping):
            _check_network_ints(value, name)
        elif isinstance(value, (list, tuple)):
            for v in value:
                if isinstance(v, int) and not isinstance(v, bool):
                    check_int(name, v, 0, MAX_NETWORK_INT)
        elif isinstance(value, int) and not isinstance(value, bool):
            check_int(name, value, 0, MAX_NETWORK_INT)


def check_train_config(config: Mapping[str, Any]) -> None:
    """Bounds of a training recipe (the mapping of a ``TrainConfig`` file), before any data
    is loaded or network built. Only keys that are present are checked.

    Raises:
        ConfigBoundsError: naming the first offending key.
    """
    if "input_size" in config:
        check_int("input_size", config["input_size"], MIN_INPUT_SIZE, MAX_INPUT_SIZE)
    if "image_channels" in config:
        ch = check_int("image_channels", config["image_channels"], 1, max(ALLOWED_CHANNELS))
        if ch not in ALLOWED_CHANNELS:
            raise ConfigBoundsError(f"image_channels must be one of {ALLOWED_CHANNELS}, got {ch}")
    as_bundle: dict[str, Any] = {}
    for key in ("sampler", "schedule", "network"):
        if key in config:
            as_bundle[key] = config[key]
    check_bundle_config(as_bundle)
    for key, lo, hi in (("batch_size", 1, 4096), ("max_steps", 0, 10_000_000),
                        ("val_samples", 1, MAX_SAMPLES), ("val_steps", 1, MAX_STEPS),
                        ("trajectory_noises", 1, MAX_SAMPLES)):
        if config.get(key) is not None:
            check_int(key, config[key], lo, hi)
