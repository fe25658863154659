"""``python -m edgecnn.benchmarks.worker``: measure ONE point (JSON on stdin), print ONE JSON line.

Started by :func:`edgecnn.benchmarks.runtimes.run_point`, one process per point. Anything the
runtimes print to stdout is diverted to stderr so that the result line is the only stdout output.
A failure prints ``{"status": "error", "error": "<one line>"}`` and exits 1.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # native runtimes log to fd 1: send that to stderr
    sys.stdout = sys.stderr
    point = json.loads(sys.stdin.read())
    from edgecnn.benchmarks.measure import Protocol, machine_info, measure
    from edgecnn.benchmarks.runtimes import RUNTIMES

    try:
        runtime = RUNTIMES[point["runtime"]]
        if runtime.precision:
            point["precision"] = runtime.precision
        init = runtime.loader(point)
        result = measure(init, Protocol.from_dict(point.get("protocol", {})))
        getattr(init, "after", lambda: None)()  # a loader's untimed follow-up (e.g. precision)
        result.update({k: point[k] for k in ("precision", "file_bytes") if point.get(k)})
        code = 0
    except Exception as exc:  # one line for the row; the traceback would help no user
        text = str(exc).strip().splitlines()
        result = {"status": "error", "error": text[0] if text else exc.__class__.__name__}
        code = 1
    result["machine"] = machine_info()
    out.write(json.dumps(result) + "\n")
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
