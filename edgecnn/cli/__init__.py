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
from edgecnn.cli.common import Parser
from edgecnn.errors import EXIT_USAGE, EdgeCNNError, shorten
from edgecnn.signals import exit_status, handling, signal_name

# (module under edgecnn.cli) in the order `edgecnn --help` lists them
COMMAND_MODULES = ("models_cmd", "train_cmd", "eval_cmd", "export_cmd", "quantize_cmd", "bench_cmd", "pareto_cmd")

EPILOG = """examples:
  edgecnn models                                   list every model with params and MACs
  edgecnn info mobilenet --alpha 0.5 --res 160     one model in detail
  edgecnn export mobilenet --alpha 0.5 --res 160   verified float32 + int8 .tflite files
run 'edgecnn COMMAND --help' for the flags of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edgecnn", description="From a CNN name or checkpoint to an app-ready, verified .tflite.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgecnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"edgecnn.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``edgecnn ARGS``; returns the exit status. SIGINT, SIGTERM and SIGHUP are handled from the
    first line on (before the sub-commands import torch): one line, status 130, 143 or 129."""
    try:
        with handling():
            return _run(argv)
    except KeyboardInterrupt as exc:
        print(f"edgecnn: interrupted ({signal_name(exc)}); no partial output was kept", file=sys.stderr)
        return exit_status(exc)


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # e.g. for train --nproc to run again
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except EdgeCNNError as exc:
        print(f"edgecnn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `edgecnn models | head`: the reader left; exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the user's files or system (permissions, names too long, ...), not a bug
        where = f"{shorten(exc.filename)}: " if exc.filename else ""
        print(f"edgecnn: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: one line here, the traceback in a log file, exit 70
        from edgecnn.cli.crash import internal_error

        return internal_error(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
