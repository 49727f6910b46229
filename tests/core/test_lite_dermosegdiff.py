"""Tests of the LiteDermoSegDiff students (``cut_stages`` and the ``lite-*`` presets).

Seed 000 Table II: cutting the teacher's deepest stages one by one.
"""

from __future__ import annotations

import pytest
import torch

from napari_lesion_diffkd.core.networks.dermosegdiff import (
    DERMOSEGDIFF_PRESETS,
    PUBLISHED_PARAMS_M,
    build_dermosegdiff,
    cut_stages,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Seed 000 Table II: (teacher preset, remaining depth) -> published parameters in millions.
TABLE_II_PARAMS_M: dict[tuple[str, int], float] = {
    ("efkd-isic2018", 6): 81.6,
    ("efkd-isic2018", 5): 39.9,
    ("efkd-isic2018", 4): 19.9,
    ("efkd-isic2018", 3): 9.3,
    ("efkd-ham10000", 6): 40.3,
    ("efkd-ham10000", 5): 20.3,
    ("efkd-ham10000", 4): 12.6,
    ("efkd-ham10000", 3): 8.5,
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("teacher", "depth"), sorted(TABLE_II_PARAMS_M))
def test_table_ii_parameter_counts_within_3_percent(teacher: str, depth: int) -> None:
    config = cut_stages(DERMOSEGDIFF_PRESETS[teacher], depth)
    with torch.device("meta"):  # counts only: no allocation
        net = build_dermosegdiff(teacher, **config)
    assert net.levels == depth and net.downsampling_factor == 2 ** (depth - 1)
    millions = _count(net) / 1e6
    published = TABLE_II_PARAMS_M[(teacher, depth)]
    assert abs(millions - published) / published < 0.03, (teacher, depth, millions, published)


@pytest.mark.parametrize(
    ("student", "teacher"),
    [("lite-efkd-isic2018", "efkd-isic2018"), ("lite-efkd-ham10000", "efkd-ham10000"),
     ("lite-cpu-small", "cpu-small")],
)
def test_lite_presets_are_depth_3_cuts_of_their_teachers(student: str, teacher: str) -> None:
    assert DERMOSEGDIFF_PRESETS[student] == cut_stages(DERMOSEGDIFF_PRESETS[teacher], 3)
    with torch.device("meta"):
        millions = _count(build_dermosegdiff(student)) / 1e6
    if student in PUBLISHED_PARAMS_M:  # the Table II students: 9.3M / 8.5M
        published = PUBLISHED_PARAMS_M[student]
        assert published == TABLE_II_PARAMS_M[(teacher, 3)]
        assert abs(millions - published) / published < 0.03, (student, millions)


def test_lite_cpu_small_forward_shape() -> None:
    torch.manual_seed(0)
    net = build_dermosegdiff("lite-cpu-small").eval()
    assert net.downsampling_factor == 4
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 1, 64, 64, generator=gen)
    image = torch.randn(2, 3, 64, 64, generator=gen)
    t = torch.tensor([3.0, 200.0])
    with torch.no_grad():
        out = net(x_t, t, image)
    assert out.shape == (2, 1, 64, 64) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())


def test_cut_stages_copies_and_keeps_other_keys() -> None:
    teacher = DERMOSEGDIFF_PRESETS["cpu-small"]
    before = {k: (list(v) if isinstance(v, list) else v) for k, v in teacher.items()}
    out = cut_stages(teacher, 4)
    assert out["mask_stage_mults"] == [1, 2, 3, 4]
    assert out["image_stage_mults"] == [1, 2, 4, 8]
    assert {k: v for k, v in out.items() if not k.endswith("_stage_mults")} == {
        k: v for k, v in teacher.items() if not k.endswith("_stage_mults")
    }
    assert teacher == before  # the preset is not mutated
    out["mask_stage_mults"].append(99)
    assert teacher == before  # and the copy shares no list with it
    assert cut_stages(teacher, 6) == teacher and cut_stages(teacher, 6) is not teacher
    # Missing stage lists fall back to the constructor's defaults (six stages).
    assert cut_stages({"base_channels_mask": 8}, 2) == {
        "base_channels_mask": 8, "mask_stage_mults": [1, 2], "image_stage_mults": [1, 2],
    }


@pytest.mark.parametrize("depth", [-1, 0, 1, 7, 2.5])
def test_cut_stages_rejects_bad_depths(depth: object) -> None:
    with pytest.raises(ValueError, match=r"depth must be an integer in \[2, 6\]"):
        cut_stages(DERMOSEGDIFF_PRESETS["efkd-isic2018"], depth)  # type: ignore[arg-type]


def test_cut_stages_rejects_a_cut_student_deepened_and_mismatched_lists() -> None:
    student = DERMOSEGDIFF_PRESETS["lite-efkd-isic2018"]
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        cut_stages(student, 4)  # can only cut, never add stages
    bad = {"mask_stage_mults": [1, 2, 3], "image_stage_mults": [1, 2]}
    with pytest.raises(ValueError, match="same length"):
        cut_stages(bad, 2)
