"""Label versions on real PH2 images: never overwritten, the current-label rule, 3D labels,
import / export round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.io import imread

from napari_lesion_diffkd.core.store import ProjectStore, export_labels, import_folder
from tests.core.store.conftest import UNLABELLED


def test_import_matches_the_dataset_and_is_idempotent(project: ProjectStore,
                                                      ph2_folder: Path) -> None:
    images = project.images()
    assert len(images) == 8 and images[0].modality == "dermoscopy"
    assert images[0].shape == imread(images[0].path).shape[:2] and images[0].channels == 3
    assert len(project.unlabelled_images()) == UNLABELLED
    for image in images[:-UNLABELLED]:
        label = project.read_label(project.current_label(image))
        truth = imread(ph2_folder / "masks" / f"{image.name}.png") > 127
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        np.testing.assert_array_equal(label.astype(bool), truth)
    again = import_folder(project, ph2_folder)
    assert (again.images_added, again.images_known, again.labels_added,
            again.labels_unchanged) == (0, 8, 0, 8 - UNLABELLED)
    assert len(project.label_versions()) == 8 - UNLABELLED
    assert project.check().ok and not project.check().orphan_files


def test_saving_adds_versions_and_the_current_label_prefers_humans(
        project: ProjectStore) -> None:
    image = project.images()[0]
    first = project.current_label(image)
    original = project.read_label(first)
    pseudo = project.save_label(image, np.zeros(image.shape, bool), kind="pseudo",
                                model_name="m", model_version="v1", author="job:1")
    assert pseudo.parent_id == first.id
    assert project.current_label(image).id == first.id  # a newer pseudo never hides a human
    edited = original.copy()
    edited[:10] = 1
    human = project.save_label(image, edited, author="ann")
    sam = project.save_label(image, original, kind="sam-assisted", author="ann")
    assert (human.parent_id, sam.parent_id) == (first.id, human.id)
    assert project.current_label(image).id == sam.id  # newest human kind
    # Every version is still there, byte for byte.
    np.testing.assert_array_equal(project.read_label(first), original)
    np.testing.assert_array_equal(project.read_label(human), edited)
    assert [v.kind for v in project.label_versions(image)] == \
        ["human", "pseudo", "human", "sam-assisted"]
    assert len({v.file for v in project.label_versions(image)}) == 4

    unlabelled = project.unlabelled_images()[0]
    assert project.current_label(unlabelled) is None
    a = project.save_label(unlabelled, np.ones(unlabelled.shape, np.uint8), kind="model")
    b = project.save_label(unlabelled, np.zeros(unlabelled.shape, np.uint8), kind="pseudo")
    assert project.current_label(unlabelled).id == b.id and b.parent_id == a.id
    assert unlabelled.id in {i.id for i in project.unlabelled_images()}


def test_multi_label_ids_and_3d_labels_round_trip(tmp_path: Path, ct_pairs) -> None:
    from napari_lesion_diffkd.core.data.nifti import read_nifti

    # A (Z, Y, X) CT volume built from real slices, as NIfTI with spacing.
    from napari_lesion_diffkd.core.data.writers import write_labels_nifti

    slices = np.stack([imread(p) for p, _ in ct_pairs[:4]]).astype(np.uint8)
    masks = np.stack([imread(m) > 127 for _, m in ct_pairs[:4]]).astype(np.uint8)
    volume_path = tmp_path / "ct.nii.gz"
    write_labels_nifti(volume_path, slices, spacing=(5.0, 0.7, 0.7))
    with ProjectStore.create(tmp_path / "p") as store:
        image = store.add_image(volume_path, modality="CT")
        assert image.name == "ct" and image.shape == (4, 256, 256)
        assert image.spacing == (5.0, 0.7, 0.7)
        labels = masks.astype(np.uint16) * 2  # label id 2
        labels[0, :5, :5] = 300  # needs 16 bits
        version = store.save_label(image, labels)
        assert version.file.name.endswith(".nii.gz")
        back = store.read_label(version)
        assert back.dtype == np.uint16
        np.testing.assert_array_equal(back, labels)
        assert export_labels(store, tmp_path / "out") == 1
        exported = read_nifti(tmp_path / "out" / "masks" / "ct.nii.gz")
        np.testing.assert_array_equal(exported.data, labels)
        assert exported.spacing == (5.0, 0.7, 0.7)


def test_export_current_or_human_as_a_trainable_folder(project: ProjectStore,
                                                       tmp_path: Path) -> None:
    from napari_lesion_diffkd.core.data.datasets import scan_pairs

    unlabelled = project.unlabelled_images()[0]
    project.save_label(unlabelled, np.ones(unlabelled.shape, np.uint8), kind="pseudo")
    assert export_labels(project, tmp_path / "human", which="human") == 8 - UNLABELLED
    assert export_labels(project, tmp_path / "current", images="copy") == 8 - UNLABELLED + 1
    pairs = scan_pairs(tmp_path / "human")
    assert len(pairs) == 8 - UNLABELLED and pairs[0].image_path.is_symlink()
    mask = imread(pairs[0].mask_path)
    assert set(np.unique(mask)) <= {0, 255}  # the datasets' own mask format
    assert not (tmp_path / "current" / "images" / f"{unlabelled.name}.jpg").is_symlink()
    rows = (tmp_path / "current" / "metadata.csv").read_text().splitlines()
    assert rows[0] == "id,group" and len(rows) == 8 - UNLABELLED + 2
