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


def _contract_modules() -> set[str]:
    """Every module of this package that a contract names, relative to the package
    (``core.store``, ``plugin`` ...), with the layers of ``layers`` contracts."""
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    root = "napari_lesion_diffkd."
    names: set[str] = set()
    for contract in contracts:
        for key in ("source_modules", "forbidden_modules", "ancestors"):
            names.update(m[len(root):] for m in contract.get(key, []) if m.startswith(root))
        for container in contract.get("containers", []):
            names.update(f"{container[len(root):]}.{layer}" for layer in contract["layers"])
    return names


def _fake_package(root: Path, extra_imports: dict[str, str]) -> None:
    """A package ``fakepkg`` with every module the contracts name (empty packages), plus
    ``extra_imports``: module path -> an import line to put in it."""
    modules = {"__init__"} | {name.replace(".", "/") + "/__init__"
                              for name in _contract_modules()}
    for name in sorted(modules):
        path = root / "fakepkg" / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text("")
        path.write_text(extra_imports.get(name, "") + "\n")


@pytest.mark.parametrize("module, line", [
    ("core/store/__init__", "import fakepkg.core.training"),         # the store trains
    ("core/store/__init__", "import fakepkg.core.tasks"),            # the store knows job types
    ("core/data/__init__", "import fakepkg.core.segmenter"),         # bottom looks up
    ("core/tasks/__init__", "import fakepkg.core.active_learning"),  # a layer looks up
    ("core/segmenter/__init__", "import fakepkg.plugin"),                     # core imports the plugin
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
