"""The layering contracts of pyproject.toml's ``[tool.importlinter]`` section hold, and they
would catch a breach.

Layers, bottom up: data / networks / diffusion (and the ``jobs`` events) <- model code <-
store (persists, knows no kind of work) <- tasks (job types) <- active_learning <-
job_runner; core never imports plugin or cli, nor napari or Qt.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def _lint(config: Path) -> int:
    from importlinter.cli import lint_imports

    return lint_imports(config_filename=str(config), no_cache=True, no_logo=True)


def test_the_layering_contracts_hold(capsys: pytest.CaptureFixture[str]) -> None:
    assert _lint(PYPROJECT) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 5 and out.count("KEPT") == len(contracts)


def _fake_package(root: Path, extra_imports: dict[str, str]) -> None:
    """A package ``fakepkg`` with the module layout the contracts name (empty modules),
    plus ``extra_imports``: module path -> an import line to put in it."""
    modules = ["core/__init__", "core/jobs", "core/bundle", "core/registry", "core/segmenter",
               "core/metrics", "core/evaluation", "core/predict_files", "core/job_runner",
               "plugin/__init__", "cli/__init__", "__init__"]
    packages = ["data", "networks", "diffusion", "ensemble", "onnx", "training",
                "distillation", "sam", "store", "tasks", "active_learning", "annotation_sim"]
    modules += [f"core/{p}/__init__" for p in packages]
    for name in modules:
        path = root / "fakepkg" / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(extra_imports.get(name, "") + "\n")


@pytest.mark.parametrize("module, line", [
    ("core/store/__init__", "import fakepkg.core.training"),         # the store trains
    ("core/store/__init__", "import fakepkg.core.tasks"),            # the store knows job types
    ("core/data/__init__", "import fakepkg.core.segmenter"),         # bottom looks up
    ("core/tasks/__init__", "import fakepkg.core.active_learning"),  # a layer looks up
    ("core/segmenter", "import fakepkg.plugin"),                     # core imports the plugin
    ("core/ensemble/__init__", "import fakepkg.core.onnx"),          # with the next: a circle
])
def test_each_contract_catches_a_breach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], module: str,
                                        line: str) -> None:
    extra = {module: line}
    if module == "core/ensemble/__init__":
        extra["core/onnx/__init__"] = "import fakepkg.core.ensemble"
    _fake_package(tmp_path, extra)
    config = PYPROJECT.read_text().replace("napari_lesion_diffkd", "fakepkg")
    (tmp_path / "pyproject.toml").write_text(config)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.split(".")[0] == "fakepkg"]:
        monkeypatch.delitem(sys.modules, name)
    assert _lint(tmp_path / "pyproject.toml") == 1
    assert "BROKEN" in capsys.readouterr().out
    # The same tree without the breach passes, so the failure above is the breach's.
    _fake_package(tmp_path, {})
    assert _lint(tmp_path / "pyproject.toml") == 0
