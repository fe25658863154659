"""``edgecnn bench`` as a Python API: export what is missing, then measure points one process each."""

from __future__ import annotations

from pathlib import Path

from edgecnn.benchmarks.sweep import read_report
from edgecnn.errors import EdgeCNNError


def _export_made_by(folder: Path) -> tuple[str | None, set[str]]:
    """(converter, precisions present) of an export folder's checked ``report.json``; (None, {}) when
    it has no usable one."""
    try:
        report = read_report(folder)
    except (OSError, EdgeCNNError):
        return None, set()
    if report is None:
        return None, set()
    return report["converter"], {f["precision"] for f in report["files"] if (folder / f["name"]).is_file()}


def ensure_export(spec: dict, precisions: list[str], exports_root: Path, converter: str = "litert") -> Path:
    """``exports_root/<canonical name>/`` holding every precision asked for, made by ``converter``;
    exported when missing.

    A folder whose ``report.json`` names that converter and lists those precisions is reused as it
    is. A folder another converter made (or one without a readable report) is left alone: the
    export goes to ``<canonical name>_<converter>/`` beside it. Exports for benchmarking skip
    verification and the report's quick latency (``edgecnn bench`` measures).
    """
    from edgecnn.pipelines.export import export

    folder = Path(exports_root) / spec["label"]
    made_by, have = _export_made_by(folder)
    if folder.exists() and made_by != converter:
        folder = folder.with_name(f"{folder.name}_{converter}")
        made_by, have = _export_made_by(folder)
    if made_by != converter or not set(precisions) <= have:
        export(spec["name"], res=spec["res"], num_classes=spec.get("num_classes"),
               in_chans=spec.get("in_chans"), quantize=precisions, converter=converter, out=folder,
               verify=False, measure=False, **spec["knobs"])
    return folder
