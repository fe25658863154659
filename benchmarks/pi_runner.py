"""edgecnn's board runner: measure one .tflite on this machine, print ONE JSON line.

``remote_ssh`` ships this file as ``__main__.py`` of a single-file zipapp, next to ``measure.py``
(the same measurement method as local runs), so a board needs only python3, NumPy and
``ai-edge-litert`` or ``tflite_runtime`` (or TensorFlow). By hand::

    python3 edgecnn_runner.pyz --probe          # what this board has
    python3 edgecnn_runner.pyz --model m.tflite --threads 4 --protocol '{"num_runs": 50}'

Exit status 0 with the measurement, 3 with ``{"status": "error", "error": ...}`` when something is
missing or the model cannot run. Only the standard library is imported before NumPy is found.
"""

import argparse
import importlib
import json
import os
import sys

# The board has no edgecnn: this chain is the one deliberate twin of
# edgecnn.converters.tflite_runtime.interpreter_class (same order, same fallbacks).
INTERPRETERS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")


def _fail(message, found):
    print(json.dumps({"status": "error", "error": message, "found": found}))
    sys.stdout.flush()
    sys.exit(3)


def find_interpreter(found):
    """The first importable TFLite Interpreter class; records what was tried in ``found``."""
    tried = []
    for module in INTERPRETERS:
        try:
            cls = importlib.import_module(module).Interpreter
        except Exception as exc:  # ImportError, or NumPy-ABI errors of old tflite_runtime wheels
            tried.append(f"{module.split('.')[0]} ({exc.__class__.__name__}: {str(exc)[:80]})")
            continue
        top = sys.modules[module.split(".")[0]]
        found["interpreter"] = f"{module.split('.')[0]} {getattr(top, '__version__', '')}".strip()
        return cls
    found["interpreter"] = None
    _fail("no TFLite interpreter on this board: tried " + "; ".join(tried)
          + ". Install one: pip install ai-edge-litert (or tflite-runtime on NumPy 1)", found)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="edgecnn_runner", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="path of the .tflite file on this machine")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")
    parser.add_argument("--protocol", default="{}", help="measurement protocol as JSON")
    parser.add_argument("--probe", action="store_true", help="only report what this board has")
    args = parser.parse_args(argv)
    found = {"python": sys.version.split()[0], "executable": sys.executable}
    try:
        import numpy
    except ImportError as exc:
        _fail(f"NumPy is not installed for {sys.executable} ({exc}); install it: pip install numpy",
              found)
    found["numpy"] = numpy.__version__
    import measure  # beside this file inside the zipapp

    cls = find_interpreter(found)
    if args.probe:
        print(json.dumps({"status": "ok", "found": found, "machine": measure.machine_info()}))
        return 0
    if not args.model or not os.path.isfile(args.model):
        _fail(f"model file {args.model!r} does not exist on this board", found)
    state = {}

    def init():
        state["interpreter"] = cls(model_path=args.model, num_threads=args.threads)
        state["interpreter"].allocate_tensors()
        return measure.interpreter_runner(state["interpreter"])

    try:
        result = measure.measure(init, measure.Protocol.from_dict(json.loads(args.protocol)))
    except Exception as exc:  # one line for the caller's row
        text = str(exc).strip().splitlines()
        _fail(f"cannot run {os.path.basename(args.model)}: {text[0] if text else exc.__class__.__name__}",
              found)
    result.update(precision=measure.tflite_precision(state["interpreter"]),
                  file_bytes=os.path.getsize(args.model),
                  machine=measure.machine_info(), found=found)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
