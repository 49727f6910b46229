"""npe2 reader/writer contributions: layer tuples, never-raise reading, writers, a real viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

from napari_lesion_diffkd.core.data.readers import read_image
from napari_lesion_diffkd.plugin._reader import napari_get_reader
from napari_lesion_diffkd.plugin._writer import write_labels_nifti, write_labels_png
from tests.core.test_dicom import PIXEL_SPACING, SLICE_GAP, consecutive_ct_slices, expected_hu
from tests.core.test_dicom import write_ct_series

PLUGIN = "napari-lesion-diffkd"


@pytest.fixture(scope="module")
def ct_slices(data_root) -> list[np.ndarray]:
    return consecutive_ct_slices(data_root, 6)


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory, ct_slices) -> Path:
    folder = tmp_path_factory.mktemp("dicom") / "ct_series"
    write_ct_series(folder, ct_slices, seed=11)
    return folder


@pytest.fixture
def warnings_shown(monkeypatch) -> list[str]:
    """Capture napari warning notifications raised by the reader."""
    import napari.utils.notifications as notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_warning", lambda msg: shown.append(str(msg)))
    return shown


def test_unsupported_paths_are_declined(tmp_path, ph2_pairs):
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    assert napari_get_reader(str(tmp_path / "a.gif")) is None
    assert napari_get_reader(str(tmp_path / "nothing.xyz")) is None
    assert napari_get_reader([str(ph2_pairs[0][0]), str(tmp_path / "a.gif")]) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert napari_get_reader(str(empty)) is None
    assert napari_get_reader([]) is None


def test_corrupt_file_warns_and_returns_empty(tmp_path, busbra_pairs, warnings_shown):
    bad = tmp_path / "broken.png"
    raw = Path(busbra_pairs[0][0]).read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    reader = napari_get_reader(str(bad))
    assert reader is not None  # accepted by suffix; the failure shows up when reading
    assert reader(str(bad)) == []
    assert len(warnings_shown) == 1 and "broken.png" in warnings_shown[0]


def test_dicom_folder_layer(dicom_dir, ct_slices):
    reader = napari_get_reader(str(dicom_dir))
    assert reader is not None
    [(data, kwargs, layer_type)] = reader(str(dicom_dir))
    assert layer_type == "image"
    np.testing.assert_array_equal(data, expected_hu(ct_slices))
    assert kwargs["scale"] == pytest.approx((SLICE_GAP, *PIXEL_SPACING))
    assert kwargs["contrast_limits"] == (-160.0, 240.0)  # soft-tissue window in HU
    assert kwargs["rgb"] is False and kwargs["name"] == "ct_series"
    meta = kwargs["metadata"]
    assert meta["modality"] == "CT" and meta["source"] == str(dicom_dir)
    assert meta["spacing"] == pytest.approx(kwargs["scale"])
    assert meta["series_instance_uid"]  # LoadedImage metadata is passed through


def test_files_lists_and_image_folders(tmp_path, ph2_pairs, busbra_pairs):
    ph2 = str(ph2_pairs[0][0])
    [(data, kwargs, _)] = napari_get_reader(ph2)(ph2)
    assert kwargs["rgb"] is True and data.shape == imread(ph2).shape
    assert kwargs["scale"] == (1.0, 1.0) and "contrast_limits" not in kwargs
    assert kwargs["metadata"]["modality"] is None and kwargs["name"] == Path(ph2).stem

    pair = [ph2, str(busbra_pairs[0][0])]
    layers = napari_get_reader(pair)(pair)
    assert [lt[1]["rgb"] for lt in layers] == [True, False]

    for p, _ in busbra_pairs[:3]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "notes.txt").write_text("ignored")
    layers = napari_get_reader(str(tmp_path))(str(tmp_path))
    assert [lt[1]["name"] for lt in layers] == [p.stem for p, _ in busbra_pairs[:3]]


def test_writer_png_and_nifti(tmp_path, ct_pairs):
    mask = (imread(ct_pairs[0][1]) > 127).astype(np.int32)  # napari labels are integers
    [written] = write_labels_png(str(tmp_path / "mask.png"), mask, {"scale": (1.0, 1.0)})
    np.testing.assert_array_equal(read_image(written).data, mask * 255)
    [no_suffix] = write_labels_png(str(tmp_path / "mask2"), mask, {})
    assert no_suffix.endswith("mask2.png")
    with pytest.raises(ValueError, match="2D"):
        write_labels_png(str(tmp_path / "vol.png"), np.stack([mask, mask]), {})

    labels = np.stack([imread(m) > 127 for _, m in ct_pairs[:3]]).astype(np.uint8) * 2
    scale = (SLICE_GAP, *PIXEL_SPACING)
    [nii] = write_labels_nifti(str(tmp_path / "labels.nii.gz"), labels, {"scale": scale})
    back = read_image(nii)
    np.testing.assert_array_equal(back.data, labels)
    assert back.spacing == pytest.approx(scale)

    # Labels derived from a NIfTI image carry its affine: it is reused when scale agrees.
    affine = back.metadata["affine"].copy()
    affine[:3, 3] = [10.0, -20.0, 30.0]
    meta = {"scale": scale, "metadata": {"affine": affine}}
    [nii2] = write_labels_nifti(str(tmp_path / "labels2.nii"), labels, meta)
    np.testing.assert_allclose(read_image(nii2).metadata["affine"], affine, atol=1e-5)


@pytest.mark.gui
def test_viewer_opens_and_saves_with_plugin(make_napari_viewer, ph2_pairs, dicom_dir, tmp_path):
    viewer = make_napari_viewer()
    ph2 = ph2_pairs[0][0]
    [rgb_layer] = viewer.open(str(ph2), plugin=PLUGIN)
    assert rgb_layer.rgb and rgb_layer.data.shape == imread(ph2).shape

    [ct_layer] = viewer.open(str(dicom_dir), plugin=PLUGIN)
    assert ct_layer.data.shape == (6, 256, 256)
    np.testing.assert_allclose(ct_layer.scale, (SLICE_GAP, *PIXEL_SPACING))
    assert tuple(ct_layer.contrast_limits) == pytest.approx((-160.0, 240.0))
    assert ct_layer.metadata["modality"] == "CT"

    labels = viewer.add_labels(
        (ct_layer.data > -700).astype(np.uint8), scale=ct_layer.scale, name="seg"
    )
    [saved] = labels.save(str(tmp_path / "seg.nii.gz"), plugin=PLUGIN)
    back = read_image(saved)
    np.testing.assert_array_equal(back.data, labels.data)
    assert back.spacing == pytest.approx((SLICE_GAP, *PIXEL_SPACING))
