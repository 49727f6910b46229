"""Trainer options added for the CT recipe ablation (#18): a cosine over the wall-time budget
(``lr_schedule: cosine-time``) and the augmentation's shift / photometric strength as config
keys. Existing configs must train exactly as before (their defaults are the old constants)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from napari_lesion_diffkd.core.data.datasets import scan_pairs
from napari_lesion_diffkd.core.jobs import run_to_completion
from napari_lesion_diffkd.core.training import augment, trainer
from napari_lesion_diffkd.core.training.config import TrainConfig
from napari_lesion_diffkd.core.training.trainer import lr_at, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A tiny plain SegUNet on real CT slices (32 px): the ct-unet network family.
TINY = dict(
    name="ct-recipe-test", modality="ct", role="baseline", objective="segmentation",
    input_size=32, image_channels=1,
    network={"_class_name": "SegUNet", "base_channels": 4, "channel_mults": [1, 2],
             "blocks_per_level": 1, "stem_stride": 1},
    batch_size=4, lr=0.002, warmup_steps=2, max_steps=20, val_every=1000,
    checkpoint_every=1000, checkpoint_seconds=None, ema_decay=0.0, dropout_holes=0,
    vertical_flip=True, rotate90=False,
)


@pytest.fixture(scope="module")
def ct_subset(tmp_path_factory: pytest.TempPathFactory, ct_pairs) -> Path:
    """The first 8 CT pairs (symlinks) in two groups, so the split has a validation side."""
    dst = tmp_path_factory.mktemp("ct_subset")
    (dst / "images").mkdir()
    (dst / "masks").mkdir()
    rows = []
    for i, (image, mask) in enumerate(ct_pairs):
        (dst / "images" / image.name).symlink_to(image)
        (dst / "masks" / mask.name).symlink_to(mask)
        rows.append(f"{image.stem},{'a' if i < 6 else 'b'}\n")
    (dst / "metadata.csv").write_text("id,group\n" + "".join(rows))
    return dst


def test_time_cosine_follows_elapsed_minutes_not_steps() -> None:
    config = TrainConfig(lr=0.002, warmup_steps=10, max_steps=100000, max_minutes=10.0,
                         lr_schedule="cosine-time")
    assert lr_at(0, config, elapsed_minutes=9.0) == pytest.approx(0.002 / 10)  # warm-up first
    assert lr_at(50, config, elapsed_minutes=0.0) == pytest.approx(0.002)
    assert lr_at(50, config, elapsed_minutes=5.0) == pytest.approx(0.002 * (0.05 + 0.95 * 0.5))
    assert lr_at(50, config, elapsed_minutes=10.0) == pytest.approx(0.002 * 0.05)
    assert lr_at(50, config, elapsed_minutes=30.0) == pytest.approx(0.002 * 0.05)
    # The step cosine (the default) ignores the clock: at step 50 of 100000 it has not moved.
    steps = TrainConfig(lr=0.002, warmup_steps=10, max_steps=100000, max_minutes=10.0)
    assert lr_at(50, steps, elapsed_minutes=10.0) == pytest.approx(0.002, rel=1e-6)


def test_time_cosine_decays_during_a_real_run(ct_subset: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock that advances 1 s per reading: the budget (1 min) is spent after a known
    # number of readings whatever the machine's speed, and the LR must fall with it.
    clock = iter(range(10**6))
    monkeypatch.setattr(trainer.time, "monotonic", lambda: float(next(clock)))
    config = TrainConfig(**{**TINY, "max_steps": 100000, "max_minutes": 1.0,
                            "lr_schedule": "cosine-time"})
    summary = run_to_completion(train(config, scan_pairs(ct_subset), tmp_path))
    assert 2 < summary["steps"] < 100000  # stopped by the budget, not the step cap
    log = (tmp_path / "train_log.jsonl").read_text().splitlines()
    lrs = [e["lr"] for e in map(json.loads, log) if "lr" in e]
    assert lrs, "no logged steps"
    assert lrs[-1] < 0.5 * config.lr  # decayed by the clock (a step cosine would be ~lr)
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))


def test_time_cosine_without_a_budget_is_one_clear_error(ct_subset: Path, tmp_path: Path
                                                         ) -> None:
    config = TrainConfig(**{**TINY, "lr_schedule": "cosine-time"})
    with pytest.raises(ValueError, match="needs a wall-time budget"):
        run_to_completion(train(config, scan_pairs(ct_subset), tmp_path))
    with pytest.raises(ValueError, match="unknown lr_schedule 'cosin'"):
        run_to_completion(train(TrainConfig(**{**TINY, "lr_schedule": "cosin"}),
                                scan_pairs(ct_subset), tmp_path))


def test_config_defaults_are_the_augmentations_old_constants() -> None:
    """Configs without the new keys must augment exactly as before."""
    params = inspect.signature(augment.augment_batch).parameters
    config = TrainConfig()
    assert config.augment_max_translate == params["max_translate"].default
    assert config.augment_photometric == params["photometric"].default


def test_augmentation_keys_reach_augment_batch(ct_subset: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict] = []
    real = trainer.augment_batch

    def spy(images, masks, generator, **kwargs):
        seen.append(kwargs)
        return real(images, masks, generator, **kwargs)

    monkeypatch.setattr(trainer, "augment_batch", spy)
    config = TrainConfig(**{**TINY, "max_steps": 2, "augment_max_translate": 0.06,
                            "augment_photometric": 0.0})
    run_to_completion(train(config, scan_pairs(ct_subset), tmp_path))
    assert len(seen) == 2
    assert all(k["max_translate"] == 0.06 and k["photometric"] == 0.0 for k in seen)
    assert all(k["vertical_flip"] is True and k["rotate90"] is False for k in seen)


def test_ct_recipe_configs_change_one_thing() -> None:
    """Each ablation run differs from run 0 in the keys its header names, and only those."""
    root = Path(__file__).resolve().parents[2] / "configs"
    base = TrainConfig.from_file(root / "ablation" / "ct-r0-recipe.yaml").to_dict()
    expected = {"ct-r1-bf16": {"amp_bf16"}, "ct-r2-no-vflip": {"vertical_flip"},
                "ct-r3-256-stride2": {"input_size", "network"}, "ct-r4-batch8": {"batch_size"},
                "ct-r5-ema": {"ema_decay"},
                "ct-r6-images-matched": {"network", "max_minutes", "lr_schedule", "max_steps"}}
    control = TrainConfig.from_file(root / "ablation" / "ct-ft0-control.yaml").to_dict()
    ct_unet = TrainConfig.from_file(root / "ct-unet.yaml").to_dict()
    # The warm-start control trains ct-unet's own settings from ct-unet's weights.
    same = ("input_size", "network", "batch_size", "amp_bf16", "ema_decay", "vertical_flip",
            "rotate90", "dropout_holes", "augment_max_translate", "augment_photometric")
    assert {k: control[k] for k in same} == {k: ct_unet[k] for k in same}
    assert control["init_bundle"] == "ct-unet"
    fit = TrainConfig.from_file(root / "ablation" / "ct-fit-256s2.yaml").to_dict()
    bases = {"r": base, "ft": control, "fit": fit}
    expected.update({
        "ct-ft1-fp32": {"amp_bf16"}, "ct-ft2-vflip": {"vertical_flip"},
        "ct-ft3-batch16": {"batch_size", "max_steps", "warmup_steps"},
        "ct-ft4-no-ema": {"ema_decay"},
        "ct-ft5-recipe": {"amp_bf16", "vertical_flip", "batch_size", "max_steps",
                          "warmup_steps", "ema_decay", "augment_max_translate"},
        "ct-ft6-restart": {"lr", "max_steps", "ema_decay"},
        "ct-ft7-restart-noclip": {"lr", "max_steps", "ema_decay", "grad_clip"},
        "ct-fit-128s1": {"input_size", "network"}, "ct-fit-256s2-fp32": {"amp_bf16"},
        "ct-fit-256s2-seed1": {"seed"}})
    for name, keys in expected.items():
        other = TrainConfig.from_file(root / "ablation" / f"{name}.yaml").to_dict()
        ref = bases[name.split("-")[1].rstrip("0123456789")]
        changed = {k for k in ref if ref[k] != other[k]} - {"name"}
        assert changed == keys, name
