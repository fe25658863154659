"""The ``edgecnn`` command: a thin layer over the Python API.

Each sub-command lives in its own module under ``edgecnn.cli`` and exposes ``add_parser(sub)``;
heavy libraries (TensorFlow, litert-torch, onnx2tf) are imported only inside the command that runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from edgecnn import __version__
from edgecnn.errors import EdgeCNNError

# (module under edgecnn.cli) in the order `edgecnn --help` lists them
COMMAND_MODULES = ("models_cmd", "train_cmd", "eval_cmd", "export_cmd", "quantize_cmd", "bench_cmd")

EPILOG = """examples:
  edgecnn models                                   list every model with params and MACs
  edgecnn info mobilenet --alpha 0.5 --res 160     one model in detail
  edgecnn export mobilenet --alpha 0.5 --res 160   verified float32 + int8 .tflite files
run 'edgecnn COMMAND --help' for the flags of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecnn", description="From a CNN name or checkpoint to an app-ready, verified .tflite.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgecnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"edgecnn.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # e.g. for train --nproc to run again
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgeCNNError as exc:
        print(f"edgecnn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `edgecnn models | head`: the reader left; exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("edgecnn: interrupted; no partial output was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
