"""Each teacher architecture and objective trains and samples on CPU with a tiny config.

Covers issue 3's recipes through the real ``train()`` loop on real PH2 pairs: the
DermoSegDiff-style network with the boundary-aware loss (seed 000 eq. 1), the conditional
UNet with LEAF's x0 target and feature alignment (seed 001), the UniSegDiff-style network with
its frozen pre-trained condition network and staged objective (seed 004), and the plain
SegUNet baseline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.io import imread

from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.registry import load_model
from napari_lesion_diffkd.core.segmenter import segment_image
from napari_lesion_diffkd.core.training.config import TrainConfig
from napari_lesion_diffkd.core.training.trainer import train

COMMON = dict(input_size=32, batch_size=4, max_steps=4, warmup_steps=1, val_every=4,
              checkpoint_every=4, val_samples=1, val_steps=1, augment=True)
SEG_UNET = {"_class_name": "SegUNet", "base_channels": 8, "channel_mults": [1, 2],
            "blocks_per_level": 1, "stem_stride": 2}


@pytest.fixture(scope="module")
def seg_unet_bundle(ph2_subset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "seg-unet"
    config = TrainConfig(name="seg-unet", role="baseline", objective="segmentation",
                         network=SEG_UNET, **COMMON)
    run_to_completion(train(config, scan_pairs(ph2_subset), out))
    return out


def _train_and_sample(config: TrainConfig, ph2_subset: Path, out: Path, ph2_pairs,
                      **segment_kwargs):
    summary = run_to_completion(train(config, scan_pairs(ph2_subset), out))
    assert summary["steps"] == config.max_steps
    bundle = load_model(out)
    image = imread(ph2_pairs[0][0])
    result = run_to_completion(segment_image(bundle, image, **segment_kwargs))
    assert result.consensus.shape == image.shape[:2]
    return bundle, result


def test_segunet_baseline_segments_deterministically(seg_unet_bundle: Path, ph2_pairs) -> None:
    bundle = load_model(seg_unet_bundle)
    assert bundle.config["objective"] == "segmentation"
    image = imread(ph2_pairs[0][0])
    result = run_to_completion(segment_image(bundle, image, num_samples=8))
    assert result.samples.shape == (1, *image.shape[:2])
    assert np.array_equal(result.consensus, result.probability > 0.5)


def test_dermosegdiff_with_boundary_aware_loss(ph2_subset, tmp_path, ph2_pairs) -> None:
    network = {"_class_name": "DermoSegDiffUNet", "base_channels_mask": 8,
               "base_channels_image": 4, "mask_stage_mults": [1, 2],
               "image_stage_mults": [1, 2], "attention_heads": 2, "attention_dim_head": 8,
               "resnet_groups": 4}
    config = TrainConfig(name="dsd", network=network, prediction_target="epsilon",
                         boundary_loss_weight=0.25,
                         schedule={"kind": "linear", "num_timesteps": 50}, **COMMON)
    bundle, result = _train_and_sample(config, ph2_subset, tmp_path / "dsd", ph2_pairs,
                                       num_samples=2, sampler="ddim", num_steps=2)
    assert bundle.config["network"]["_class_name"] == "DermoSegDiffUNet"
    assert result.samples.shape[0] == 2


def test_leaf_alignment_trains_the_projector(ph2_subset, tmp_path, ph2_pairs,
                                             seg_unet_bundle) -> None:
    network = {"_class_name": "CondDiffusionUNet", "base_channels": 8, "channel_mults": [1, 2],
               "image_base_channels": 8, "image_channel_mults": [1, 2], "time_dim": 16,
               "stem_stride": 2, "image_blocks_per_level": 1}
    config = TrainConfig(name="leaf", network=network, prediction_target="x0",
                         leaf_lambda=0.25, leaf_encoder=str(seg_unet_bundle),
                         leaf_feature_module="mid", **COMMON)
    _, result = _train_and_sample(config, ph2_subset, tmp_path / "leaf", ph2_pairs,
                                  num_samples=2, sampler="one-step")
    assert result.samples.shape[0] == 2
    # The projector is trained and checkpointed, so --resume continues it too.
    ckpt = torch.load(tmp_path / "leaf" / "checkpoint.pt", weights_only=True)
    assert ckpt["aligner"] and all(v.isfinite().all() for v in ckpt["aligner"].values())


def test_leaf_without_an_encoder_is_a_clear_error(ph2_subset, tmp_path) -> None:
    config = TrainConfig(name="leaf", leaf_lambda=0.5, **COMMON)
    with pytest.raises(ValueError, match="leaf_encoder"):
        run_to_completion(train(config, scan_pairs(ph2_subset), tmp_path))


def test_unisegdiff_staged_training_keeps_the_condition_frozen(
    ph2_subset, tmp_path, ph2_pairs, seg_unet_bundle
) -> None:
    network = {"_class_name": "UniSegDiffNet",
               "condition_network": {k: v for k, v in SEG_UNET.items()},
               "base_channels": 8, "channel_mults": [1, 2], "time_dim": 16,
               "attention_strides": [4], "attention_heads": 2}
    config = TrainConfig(name="usd", network=network, objective="staged",
                         prediction_target="epsilon", condition_bundle=str(seg_unet_bundle),
                         schedule={"kind": "linear", "num_timesteps": 100,
                                   "beta_start": 1e-3, "beta_end": 0.1},
                         sampler={"name": "staged", "num_samples": 3}, **COMMON)
    bundle, result = _train_and_sample(config, ph2_subset, tmp_path / "usd", ph2_pairs)
    assert result.samples.shape[0] == 3 and result.sensitivity.shape == (3,)
    # The frozen condition network is exactly the pre-trained SegUNet.
    seg = load_model(seg_unet_bundle).network.state_dict()
    cond = bundle.network.condition.state_dict()
    for key, value in seg.items():
        torch.testing.assert_close(cond[key], value)
