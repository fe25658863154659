"""The layering of ARCHITECTURE.md, enforced: import-linter's contracts (pyproject.toml) and no import cycle.

The installed package maps top-level ``converters/``, ``quantize/`` and ``benchmarks/`` to
``edgecnn.converters`` etc. (setuptools ``package-dir``); grimp, which import-linter uses, walks one
folder per package, so the check runs on a copy of the tree laid out as installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = ("converters", "quantize", "benchmarks")


@pytest.fixture(scope="module")
def installed_layout(tmp_path_factory) -> Path:
    """A copy of the package as installed: edgecnn/ with converters/, quantize/, benchmarks/ inside."""
    stage = tmp_path_factory.mktemp("layout")
    ignore = shutil.ignore_patterns("__pycache__", *MAPPED)
    shutil.copytree(ROOT / "edgecnn", stage / "edgecnn", ignore=ignore)
    for name in MAPPED:
        shutil.copytree(ROOT / name, stage / "edgecnn" / name, ignore=shutil.ignore_patterns("__pycache__"))
    return stage


def _lint(stage: Path, config: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(stage)}
    return subprocess.run([str(lint), "--no-cache", str(config)], cwd=stage, env=env, capture_output=True,
                          text=True, timeout=600)


def test_import_contracts_hold(installed_layout):
    run = _lint(installed_layout, ROOT / "pyproject.toml")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_a_backward_import_breaks_the_layer_contract(installed_layout, tmp_path):
    """The contract can fail: library code importing the CLI is reported."""
    stage = tmp_path / "stage"
    shutil.copytree(installed_layout, stage)
    with open(stage / "edgecnn" / "quantize" / "observers.py", "a") as f:
        f.write("\nfrom edgecnn.cli.common import Parser  # noqa\n")
    run = _lint(stage, ROOT / "pyproject.toml")
    assert run.returncode != 0
    assert "edgecnn.quantize.observers -> edgecnn.cli.common" in run.stdout


def test_no_import_cycle_among_edgecnn_modules(installed_layout, monkeypatch):
    """Every direct import A -> B of the package, function-level imports included: B never leads back to A."""
    import grimp

    monkeypatch.syspath_prepend(str(installed_layout))
    for name in [m for m in sys.modules if m == "edgecnn" or m.startswith("edgecnn.")]:
        monkeypatch.delitem(sys.modules, name)
    graph = grimp.build_graph("edgecnn", cache_dir=None)
    assert len(graph.modules) > 80  # the whole package was seen, mapped folders included
    cycles = sorted((a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
                    if graph.chain_exists(importer=b, imported=a))
    assert not cycles, cycles
