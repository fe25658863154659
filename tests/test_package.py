"""Packaging promises: the sub-packages install under edgecnn.*, the README table is current,
atomic writes leave nothing half-written."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from edgecnn.errors import EdgeCNNError
from edgecnn.io import atomic_dir, atomic_path, write_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, folder", [("edgecnn.converters", "converters"),
                                          ("edgecnn.quantize", "quantize"),
                                          ("edgecnn.benchmarks", "benchmarks")])
def test_code_folders_install_under_edgecnn(name, folder):
    spec = importlib.util.find_spec(name)
    assert spec is not None and Path(spec.origin).parent == ROOT / folder


def test_no_generic_top_level_modules_are_importable_outside_the_repo(tmp_path):
    code = ("import importlib.util, sys; "
            "print([n for n in ('converters', 'quantize', 'benchmarks') if importlib.util.find_spec(n)])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_readme_model_table_matches_the_registry(zoo_rows):
    from edgecnn.cli.models_cmd import markdown_table

    readme = (ROOT / "README.md").read_text()
    assert markdown_table(zoo_rows) in readme, \
        "README model table is stale: regenerate with 'edgecnn models --markdown'"


def test_atomic_path_keeps_the_old_file_on_error(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_dir_replaces_a_folder_only_when_complete(tmp_path):
    out = tmp_path / "exports" / "m"
    with atomic_dir(out) as d:
        (d / "x.tflite").write_bytes(b"1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as d:
            (d / "y.tflite").write_bytes(b"2")
            raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["x.tflite"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]
    with atomic_dir(out) as d:
        (d / "z.tflite").write_bytes(b"3")
    assert sorted(p.name for p in out.iterdir()) == ["z.tflite"]


def test_unwritable_destination_is_a_clear_error(tmp_path):
    blocker = write_text(tmp_path / "file", "x")
    with pytest.raises(EdgeCNNError, match="cannot write"):
        write_text(blocker / "sub" / "a.txt", "y")
