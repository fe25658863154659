"""Accuracy-latency trade-offs of ``edgecnn pareto`` rows: the Pareto frontier, the pick under a
latency budget, and the reports (JSON, CSV, and a PNG in the MobileNet paper's style).

A row (see :mod:`edgecnn.pipelines.pareto`) holds per precision (``int8``, ``float32``) the
``top1``/``top5`` (fractions) of the shipped ``.tflite`` file and its median ``latency_ms`` per
thread count (keys are strings: ``"1"``, ``"2"``). Every function here is pure except the writers.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from edgecnn.io import atomic_path, write_text

PRECISIONS = ("int8", "float32")


def point(row: dict, precision: str, threads: int) -> tuple[float, float] | None:
    """(median latency in ms, top-1) of ``row``'s ``precision`` file at ``threads``; None when unmeasured."""
    entry = row.get(precision) if row.get("status") == "ok" else None
    if not isinstance(entry, dict) or entry.get("top1") is None:
        return None
    ms = entry.get("latency_ms", {}).get(str(threads))
    return None if ms is None else (float(ms), float(entry["top1"]))


def frontier(rows: list[dict], precision: str = "int8", threads: int = 1) -> list[dict]:
    """The rows no other row beats: every faster row is less accurate. Ordered by latency."""
    measured = sorted(((point(r, precision, threads), r) for r in rows if point(r, precision, threads)),
                      key=lambda pr: (pr[0][0], -pr[0][1]))
    best, front = float("-inf"), []
    for (_, top1), row in measured:
        if top1 > best:
            front.append(row)
            best = top1
    return front


def pick(rows: list[dict], budget_ms: float, precision: str = "int8", threads: int = 1) -> dict | None:
    """The most accurate row whose ``precision`` file runs within ``budget_ms`` at ``threads``
    (ties: the faster); None when nothing fits."""
    fits = [(p, r) for r in rows if (p := point(r, precision, threads)) and p[0] <= budget_ms]
    return max(fits, key=lambda pr: (pr[0][1], -pr[0][0]))[1] if fits else None


def next_command(row: dict, precision: str = "int8") -> str:
    """What to run to put the picked variant into an Android app's assets."""
    io_flag = " --io uint8" if precision == "int8" else ""
    return (f"edgecnn export {row['checkpoint']} --quantize {precision}{io_flag} "
            f"--out app/src/main/assets/{row['variant']}")


def all_threads(rows: list[dict]) -> list[int]:
    """Every thread count measured in ``rows``, ascending."""
    return sorted({int(t) for r in rows for p in PRECISIONS if isinstance(r.get(p), dict)
                   for t in r[p].get("latency_ms", {})})


# ---------------------------------------------------------------- reports

def flat_row(row: dict, threads: list[int]) -> dict:
    """One CSV line: the variant, accuracies, drop, latency and peak memory per thread count, size."""
    flat = {"variant": row.get("variant"), "model": row.get("model"), "alpha": row.get("knobs", {}).get("alpha"),
            "phi": row.get("knobs", {}).get("phi"), "res": row.get("res"), "params": row.get("params"),
            "macs": row.get("macs"), "status": row.get("status"), "error": row.get("error")}
    for p in PRECISIONS:
        entry = row.get(p) if isinstance(row.get(p), dict) else {}
        flat[f"{p}_top1"], flat[f"{p}_top5"], flat[f"{p}_bytes"] = entry.get("top1"), entry.get("top5"), entry.get("bytes")
        for t in threads:
            flat[f"{p}_ms_{t}t"] = entry.get("latency_ms", {}).get(str(t))
            flat[f"{p}_peak_memory_bytes_{t}t"] = entry.get("peak_memory_bytes", {}).get(str(t))
        flat[f"{p}_path"] = entry.get("path")
    flat["int8_drop"] = row.get("int8_drop")
    change = row.get("int8_change") or {}
    flat["int8_change_points_low"], flat["int8_change_points_high"] = change.get("low"), change.get("high")
    return flat


def summary(rows: list[dict], budget_ms: float | None = None, precision: str = "int8",
            threads: int | None = None) -> dict:
    """The JSON report: rows, the frontier per precision and thread count, and the pick under the budget."""
    counts = all_threads(rows)
    threads = threads if threads is not None else (counts[0] if counts else 1)
    chosen = pick(rows, budget_ms, precision, threads) if budget_ms is not None else None
    return {"rows": rows, "threads": counts,
            "frontier": {p: {str(t): [r["variant"] for r in frontier(rows, p, t)] for t in counts} for p in PRECISIONS},
            "budget": None if budget_ms is None else {
                "latency_ms": budget_ms, "precision": precision, "threads": threads,
                "pick": chosen and {"variant": chosen["variant"], "top1": chosen[precision]["top1"],
                                    "latency_ms": point(chosen, precision, threads)[0],
                                    "path": chosen[precision]["path"], "export_dir": chosen.get("export_dir"),
                                    "next": next_command(chosen, precision)}}}


def write_csv(rows: list[dict], path: Path) -> Path:
    threads = all_threads(rows)
    flats = [flat_row(r, threads) for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(flats[0]) if flats else ["variant"])
    writer.writeheader()
    writer.writerows(flats)
    return write_text(path, buf.getvalue())


def draw(rows: list[dict], threads: int, budget_ms: float | None = None, precision: str = "int8",
         title: str = "accuracy vs latency") -> Any:
    """The MobileNet-paper figure as a matplotlib ``Figure``: top-1 (%) against median latency (ms,
    log axis) of the float32 and int8 files at ``threads``, the ``precision`` frontier drawn and
    each of its variants labelled, and the budget as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = {"int8": {"marker": "o", "color": "tab:blue"},
              "float32": {"marker": "s", "color": "tab:orange", "facecolors": "none"}}
    markers = []
    for p in PRECISIONS:
        pts = [pt for r in rows if (pt := point(r, p, threads))]
        markers += [(ms, 100 * a) for ms, a in pts]
        if pts:
            kw = dict(styles[p])
            color = kw.pop("color")
            ax.scatter([ms for ms, _ in pts], [100 * a for _, a in pts], s=36, label=f"{p} files",
                       edgecolors=color, **({"c": color} if "facecolors" not in kw else {}), **kw)
    front = frontier(rows, precision, threads)
    if front:
        xs = [point(r, precision, threads)[0] for r in front]
        ys = [100 * point(r, precision, threads)[1] for r in front]
        ax.plot(xs, ys, "-", color="tab:green", linewidth=1.5, label=f"{precision} Pareto frontier")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="tab:red", linestyle="--", linewidth=1, label=f"budget {budget_ms:g} ms")
    ax.set_xscale("log")
    ax.margins(x=0.08, y=0.1)  # room for the labels of the outermost points
    ax.set_xlabel(f"median latency (ms, batch 1, {threads} thread{'s' if threads != 1 else ''})")
    ax.set_ylabel("top-1 accuracy of the .tflite file (%)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing measured yet: no legend
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    if front:  # last: the boxes of the labels depend on the final axes
        _label_points(ax, [(r["variant"], x, y) for r, x, y in zip(front, xs, ys)], markers)
    fig.tight_layout()
    return fig


# Label positions tried in turn (offset in points, horizontal and vertical alignment). Up-left first:
# no variant is faster and more accurate than a frontier point, so that corner holds no marker.
_LABEL_SPOTS = [((-4, 4), "right", "bottom"), ((4, -4), "left", "top"), ((4, 4), "left", "bottom"),
                ((-4, -4), "right", "top"), ((-4, 14), "right", "bottom"), ((4, -14), "left", "top")]


def _label_points(ax: Any, points: list[tuple[str, float, float]], markers: list[tuple[float, float]]) -> None:
    """Annotate each (text, x, y) at the spot of :data:`_LABEL_SPOTS` that leaves the axes least and
    covers the fewest labels placed before it and markers (x, y); ties go to the earlier spot."""
    renderer = ax.figure.canvas.get_renderer()
    ax.figure.tight_layout()  # the final layout, so the boxes measured are the ones drawn
    inside, placed = ax.get_window_extent(renderer), []
    dots = ax.transData.transform(markers) if markers else []

    def cost(box: Any) -> int:
        outside = not (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and box.y1 <= inside.y1)
        covered = sum(box.x0 - 4 <= dx <= box.x1 + 4 and box.y0 - 4 <= dy <= box.y1 + 4 for dx, dy in dots)
        return 100 * outside + 10 * sum(box.overlaps(b) for b in placed) + covered

    for text, x, y in points:
        best = None
        for offset, ha, va in _LABEL_SPOTS:
            label = ax.annotate(text, (x, y), fontsize=7, xytext=offset, textcoords="offset points", ha=ha, va=va)
            box = label.get_window_extent(renderer)
            c = cost(box)
            if best is None or c < best[0]:
                if best:
                    best[1].remove()
                best = (c, label, box)
            else:
                label.remove()
            if best[0] == 0:
                break
        placed.append(best[2])


def write_plot(rows: list[dict], path: Path, threads: int, budget_ms: float | None = None,
               precision: str = "int8", title: str = "accuracy vs latency") -> Path:
    import matplotlib.pyplot as plt

    fig = draw(rows, threads, budget_ms, precision, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def write_reports(rows: list[dict], out: Path, cfg: Any) -> dict:
    """``results.json``, ``results.csv`` and ``pareto.png`` in ``out``; returns the JSON report.

    ``cfg``: the run's settings (``latency_budget``, ``budget_precision``, ``budget_threads``,
    ``family``, ``target``)."""
    report = summary(rows, cfg.latency_budget, cfg.budget_precision, cfg.budget_threads)
    report["settings"] = {"family": cfg.family, **cfg.settings}
    write_text(Path(out) / "results.json", json.dumps(report, indent=2, default=str) + "\n")
    write_csv(rows, Path(out) / "results.csv")
    threads = report["budget"]["threads"] if report["budget"] else (report["threads"] or [1])[0]
    write_plot(rows, Path(out) / "pareto.png", threads, cfg.latency_budget, cfg.budget_precision,
               f"{cfg.family} on {cfg.data}: target {cfg.target}")
    return report
