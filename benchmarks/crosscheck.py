"""Cross-check edgecnn's LiteRT numbers against Google's own Python benchmark tool, in one run.

For the same ``.tflite`` and thread count it measures edgecnn's LiteRT point (Interpreter +
XNNPACK, its own process) and ``python -m ai_edge_litert.tools.benchmark_litert_model --model M
--num_threads T --num_runs N --result_json R`` (the CompiledModel API), and prints both medians
side by side with their ratio::

    python -m edgecnn.benchmarks.crosscheck model.tflite --threads 2 --runs 100 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from edgecnn.benchmarks.measure import Protocol
from edgecnn.benchmarks.runtimes import run_point
from edgecnn.benchmarks.sweep import make_points
from edgecnn.errors import EdgeCNNError

TOOL = "ai_edge_litert.tools.benchmark_litert_model"


def google_benchmark(model: Path, threads: int, runs: int, timeout: float = 600.0) -> dict:
    """``benchmark_litert_model``'s result JSON for ``model`` (latencies in ms, as it writes them)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        argv = [sys.executable, "-m", TOOL, "--model", str(model), "--num_threads", str(threads),
                "--num_runs", str(runs), "--result_json", str(out)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EdgeCNNError(f"{TOOL} timed out after {timeout:g} s") from None
        if proc.returncode != 0 or not out.is_file():
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            raise EdgeCNNError(f"{TOOL} failed on {model} (exit {proc.returncode}): "
                               f"{lines[-1] if lines else 'no output'}")
        return json.loads(out.read_text())


def crosscheck(model: Path, threads: int = 2, runs: int = 100, rounds: int = 1,
               timeout: float = 600.0) -> dict:
    """Both tools on ``model`` at ``threads``: medians (ms) and edgecnn/Google ratio (< 1: faster).

    With ``rounds`` > 1 the two tools alternate (edgecnn, Google, edgecnn, ...) so that a change of
    machine load hits both alike; each side reports the median of its per-round medians.
    """
    model = Path(model)
    ours, theirs = [], []
    for _ in range(rounds):
        [point] = make_points("litert", [threads], Protocol(num_runs=runs), path=str(model), model=model.stem)
        row = run_point(point, timeout=timeout)
        if row.get("status") != "ok":
            raise EdgeCNNError(f"edgecnn's LiteRT run failed on {model}: {row.get('error')}")
        ours.append(row)
        theirs.append(google_benchmark(model, threads, runs, timeout)["latency"])
    ours_median = statistics.median(r["median_ms"] for r in ours)
    theirs_median = statistics.median(t["median_ms"] for t in theirs)
    return {
        "model": str(model), "threads": threads, "runs": runs, "rounds": rounds,
        "edgecnn": {"api": "Interpreter + XNNPACK", "median_ms": ours_median,
                    "round_medians_ms": [r["median_ms"] for r in ours],
                    "mean_ms": ours[-1]["mean_ms"], "init_ms": ours[-1]["init_ms"],
                    "first_ms": ours[-1]["first_ms"], "runs": ours[-1]["runs"]},
        "benchmark_litert_model": {"api": "CompiledModel", "median_ms": theirs_median,
                                   "round_medians_ms": [t["median_ms"] for t in theirs],
                                   "mean_ms": theirs[-1]["avg_ms"], "init_ms": theirs[-1]["init_ms"],
                                   "first_ms": theirs[-1]["warmup_first_ms"],
                                   "runs": theirs[-1]["num_runs"]},
        "median_ratio": ours_median / theirs_median if theirs_median else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecnn.benchmarks.crosscheck",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a .tflite file; e.g. exports/m/m_int8.tflite")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2); e.g. --threads 4")
    parser.add_argument("--runs", type=int, default=100, help="measured runs (default 100); e.g. --runs 200")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the two tools this many times (default 1); e.g. --rounds 3")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        result = crosscheck(args.model, args.threads, args.runs, args.rounds)
    except EdgeCNNError as exc:
        print(f"crosscheck: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.model} at {args.threads} threads, {args.runs} runs, {args.rounds} round(s) (ms; last round's "
          "mean/init/first)")
    print(f"{'':44}{'median':>10}{'mean':>10}{'init':>10}{'first':>10}")
    for name in ("edgecnn", "benchmark_litert_model"):
        r = result[name]
        label = f"{name} ({r['api']})"
        print(f"{label:44}{r['median_ms']:>10.3f}{r['mean_ms']:>10.3f}{r['init_ms']:>10.1f}{r['first_ms']:>10.3f}")
    print(f"median ratio edgecnn / benchmark_litert_model: {result['median_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
