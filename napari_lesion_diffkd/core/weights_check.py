"""Checks on a state dict read from disk, before it is loaded into a network.

Why: ``load_state_dict`` copies an int8 tensor into a float parameter without complaint, and
NaN or Inf weights load fine too; both gave empty masks with exit code 0. A bundle's weights
must therefore be, tensor by tensor:

* present for every tensor of the network, with no extra names (strict);
* the network's shape;
* floating point wherever the network's tensor is floating point (integer buffers such as
  BatchNorm's ``num_batches_tracked`` stay integer);
* finite (no NaN, no +-Inf).

The first problem found is reported in one line that names the tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class WeightsError(ValueError):
    """The stored tensors do not fit the network or are not usable numbers."""


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                     source: str, allow_missing: bool = False) -> None:
    """Compare stored tensors with the network's own state dict and check their values.

    Args:
        state: name -> tensor as read from the weights file (any dtype, CPU).
        expected: the network's ``state_dict()`` (names, shapes and dtypes wanted).
        source: the weights file, for the message.
        allow_missing: accept names of ``expected`` that ``state`` lacks (a LoRA bundle
            stores only its trainable tensors on top of a base model).

    Raises:
        WeightsError: ``"<source>: tensor '<name>' ..."`` for the first bad tensor, or the
            lists of missing / unexpected names.
    """
    unexpected = sorted(set(state) - set(expected))
    missing = [] if allow_missing else sorted(set(expected) - set(state))
    if unexpected or missing:
        raise WeightsError(
            f"{source}: weights do not match the network: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    for name in sorted(state):
        tensor, want = state[name], expected[name]
        if not isinstance(tensor, torch.Tensor):
            raise WeightsError(f"{source}: '{name}' is not a tensor ({type(tensor).__name__})")
        if tuple(tensor.shape) != tuple(want.shape):
            raise WeightsError(f"{source}: tensor '{name}' has shape {tuple(tensor.shape)}, the "
                               f"network needs {tuple(want.shape)}")
        if want.is_floating_point():
            if not tensor.is_floating_point():
                raise WeightsError(f"{source}: tensor '{name}' is {tensor.dtype}, expected a "
                                   "floating-point tensor (quantised or corrupt weights?)")
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(tensor).sum())
                n_inf = int((~finite).sum()) - n_nan
                raise WeightsError(f"{source}: tensor '{name}' holds {n_nan} NaN and {n_inf} "
                                   "infinite values; the weights are broken")
