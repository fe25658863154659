"""The bench issue's performance goals, measured in one run and printed as ratios.

1. Repeatability: three back-to-back measurements of the same point (int8 MobileNetV2 1.0/224,
   LiteRT, ``--threads``) agree within 5% (spread of the medians = max/min - 1).
2. For that file and thread count, edgecnn's LiteRT median is no slower than Google's
   ``benchmark_litert_model`` (ratio edgecnn/Google <= 1.0), both measured now, alternating
   three times (median of the round medians).
3. The fastest CPU path edgecnn finds for MobileNetV2 1.0/224 at that thread count, and which it is.

    python benchmarks/studies/bench_goals.py [--model M_int8.tflite] [--threads 2] [--runs 100] [--json]

The files are exported (random weights: latency and size are real, accuracy is
not measured here) into ``--exports-dir``, or reused from there; ``--model`` replaces the int8 file
of goals 1 and 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgecnn.benchmarks.crosscheck import crosscheck
from edgecnn.benchmarks.measure import Protocol
from edgecnn.benchmarks.runtimes import run_point
from edgecnn.benchmarks.sweep import fastest, make_points, points_for_files, read_export_dir, run_sweep, zoo_spec
from edgecnn.pipelines.bench import ensure_export
from edgecnn.errors import EdgeCNNError

REPEATABILITY_GOAL = 0.05


def repeatability(model: Path, threads: int, runs: int, repeats: int = 3) -> dict:
    """``repeats`` back-to-back LiteRT measurements of one point: medians (ms) and their spread."""
    [point] = make_points("litert", [threads], Protocol(num_runs=runs), path=str(model))
    rows = [run_point(point) for _ in range(repeats)]
    bad = [r for r in rows if r.get("status") != "ok"]
    if bad:
        raise EdgeCNNError(f"{model}: {bad[0].get('error')}")
    medians = [r["median_ms"] for r in rows]
    return {"medians_ms": medians, "spread": max(medians) / min(medians) - 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/studies/bench_goals.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="int8 MobileNetV2 1.0/224 .tflite (default: export one)")
    parser.add_argument("--exports-dir", type=Path, default=Path("exports"), help="default exports/")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--runs", type=int, default=100, help="measured runs per point (default 100)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        spec, _ = zoo_spec("mobilenet_v2", 224, {"alpha": 1.0})
        folder = ensure_export(spec, ["float32", "int8"], args.exports_dir)
        files, _, info = read_export_dir(folder)
        int8 = args.model or next(f for f in files if info["files"].get(f.name, {}).get("precision") == "int8")
        rep = repeatability(int8, args.threads, args.runs)
        cross = crosscheck(int8, args.threads, args.runs, rounds=3)
        protocol = Protocol(num_runs=args.runs)
        points = (points_for_files(files, [args.threads], protocol, ["litert"], None, info)
                  + points_for_files([], [args.threads], protocol, ["onnxruntime", "torch"], spec, info))
        rows = run_sweep(points, progress=sys.stderr.isatty())
    except EdgeCNNError as exc:
        print(f"bench_goals: error: {exc}", file=sys.stderr)
        return exc.exit_code
    best = min(fastest(rows)[info["model"]].values(), key=lambda r: r["median_ms"])  # any precision: the goal
    result = {
        "model": str(int8), "threads": args.threads, "runs": args.runs,
        "repeatability": {**rep, "goal": REPEATABILITY_GOAL, "met": rep["spread"] <= REPEATABILITY_GOAL},
        "vs_benchmark_litert_model": {**cross, "goal": 1.0, "met": cross["median_ratio"] <= 1.0},
        "fastest_cpu_path": {k: best.get(k) for k in ("runtime", "precision", "threads", "median_ms")},
        "cpu_paths": [{k: r.get(k) for k in ("runtime", "precision", "threads", "median_ms", "status")}
                      for r in rows],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    verdict = {True: "MET", False: "NOT MET"}
    m = rep["medians_ms"]
    print(f"int8 MobileNetV2 1.0/224 ({int8}), {args.threads} threads, {args.runs} runs per measurement")
    print(f"repeatability: medians {', '.join(f'{x:.3f}' for x in m)} ms -> spread "
          f"{rep['spread'] * 100:.1f}% (goal <= 5%): {verdict[result['repeatability']['met']]}")
    print(f"edgecnn LiteRT median {cross['edgecnn']['median_ms']:.3f} ms vs benchmark_litert_model "
          f"{cross['benchmark_litert_model']['median_ms']:.3f} ms -> ratio {cross['median_ratio']:.3f} "
          f"(goal <= 1.0): {verdict[result['vs_benchmark_litert_model']['met']]}")
    for r in sorted((r for r in rows if r.get("status") == "ok"), key=lambda r: r["median_ms"]):
        print(f"  {r['runtime']:<12} {r.get('precision') or '':<8} {r['median_ms']:8.3f} ms median")
    print(f"fastest CPU path: {best['runtime']} {best.get('precision')} at {args.threads} threads, "
          f"{best['median_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
