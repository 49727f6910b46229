"""Name -> network class map, so a checkpoint's config rebuilds its network without pickle."""

from __future__ import annotations

from typing import Any

from torch import nn

from napari_lesion_diffkd.core.networks.cond_unet import CondDiffusionUNet
from napari_lesion_diffkd.core.networks.dermosegdiff import DermoSegDiffUNet
from napari_lesion_diffkd.core.networks.fast_student import FastStudentNet
from napari_lesion_diffkd.core.networks.seg_unet import SegUNet
from napari_lesion_diffkd.core.networks.unisegdiff import UniSegDiffNet

NETWORKS: dict[str, type[nn.Module]] = {
    "CondDiffusionUNet": CondDiffusionUNet,
    "DermoSegDiffUNet": DermoSegDiffUNet,
    "FastStudentNet": FastStudentNet,
    "SegUNet": SegUNet,
    "UniSegDiffNet": UniSegDiffNet,
}


def build_network(config: dict[str, Any]) -> nn.Module:
    """Build a network from ``{"_class_name": NAME, **constructor kwargs}``."""
    name = config.get("_class_name")
    if name not in NETWORKS:
        raise ValueError(f"unknown network class {name!r}; known: {sorted(NETWORKS)}")
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    return NETWORKS[name](**kwargs)


def network_config(network: nn.Module) -> dict[str, Any]:
    """The config dict that :func:`build_network` turns back into ``network``."""
    return {"_class_name": type(network).__name__, **getattr(network, "config")}
