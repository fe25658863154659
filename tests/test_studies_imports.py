"""The experiment scripts under benchmarks/studies import edgecnn names that exist.

They are not installed and no test runs them (hours of compute), and most import inside functions,
so a renamed module broke one silently: ``lite0_int8.py`` imported ``edgecnn.export.build_model``
for weeks after it moved to ``edgecnn.pipelines.export``. This reads every ``from edgecnn... import``
of every study (function-level ones included) and resolves it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

STUDIES = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "studies").glob("*.py"))


@pytest.mark.parametrize("study", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_edgecnn_import_of_a_study_resolves(study):
    missing = []
    for node in ast.walk(ast.parse(study.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgecnn":
            try:
                module = importlib.import_module(node.module)
            except ImportError as exc:
                missing.append(f"line {node.lineno}: {node.module} ({exc})")
                continue
            missing += [f"line {node.lineno}: {node.module}.{a.name}" for a in node.names
                        if not hasattr(module, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, f"{study.name}: " + "; ".join(missing)
