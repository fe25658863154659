"""Flags and output helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, NoReturn

from edgecnn.errors import EXIT_USAGE
from edgecnn.limits import IN_CHANS, KNOB_HINTS, KNOBS, NUM_CLASSES, RES, Bound


class Parser(argparse.ArgumentParser):
    """argparse with the house error format: one line ``edgecnn: error: ...``, exit status 2.

    Sub-command parsers inherit the class (``add_subparsers`` uses the parent's type).
    """

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]
        hint = f" (see 'edgecnn {command} --help')" if command else ""
        self.exit(EXIT_USAGE, f"edgecnn: error: {' '.join(message.split())}{hint}\n")


def bounded(bound: Bound, hint: str = "") -> Callable[[str], int | float]:
    """An argparse type: the number in ``text`` if ``bound`` allows it, else an error naming the range."""

    def parse(text: str) -> int | float:
        try:
            value = int(text) if bound.integer else float(text)
        except ValueError:
            value = None
        if not bound.allows(value):
            raise argparse.ArgumentTypeError(bound.message(text, hint, typed=True))
        return value

    parse.bound = bound  # lets tests find every bounded flag
    return parse


ALPHA_HINT = KNOB_HINTS["alpha"]  # bench's --alpha list


def add_model_args(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    """MODEL plus the knobs of every registered model (:func:`add_knob_args`), resolution and shape."""
    parser.add_argument("model", metavar="MODEL",
                        help="zoo name or alias, e.g. mobilenet, mobilenet_v2, efficientnet_b0 "
                             "(see 'edgecnn models')")
    add_knob_args(parser)
    parser.add_argument("--res", type=bounded(RES), metavar="PX",
                        help="square input resolution in pixels, 8-2048 and at least the model's minimum "
                             "(default: the model's own, e.g. 224); "
                             "e.g. --res 160")
    parser.add_argument("--num-classes", type=bounded(NUM_CLASSES), default=None, metavar="N",
                        help="classifier outputs (default 1000, or the checkpoint's)")
    parser.add_argument("--in-chans", type=bounded(IN_CHANS), default=None, metavar="C",
                        help="input channels: 3 for RGB, 1 for grayscale (default: the model's)")
    if weights:
        parser.add_argument("--weights", metavar="W",
                            help="'imagenet' (torchvision's released file, SHA-256 checked), or a "
                                 "local .pth/.pt/.safetensors file or edgecnn checkpoint "
                                 "(default: random initialisation)")


def add_knob_args(parser: argparse.ArgumentParser) -> None:
    """One flag per knob of the registry's models (``ModelSpec.tunable``): numbers bounded by
    :data:`edgecnn.limits.KNOBS` (``--alpha A``), switches as ``--aux-logits/--no-aux-logits``.
    Unset flags stay None: the model's own default applies, and the registry refuses a knob the
    chosen model does not have."""
    from edgecnn.models.registry import get_spec, is_numeric_knob, tunable_knobs

    for name, knob in tunable_knobs().items():
        flag, default, models = "--" + name.replace("_", "-"), knob["default"], ", ".join(knob["models"])
        shared = len({get_spec(m).tunable[name] for m in knob["models"]}) == 1
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{name} of {models}: on or off (default {'on' if default else 'off'}); "
                                     f"e.g. {flag}")
        elif is_numeric_knob(default):
            if name not in KNOBS:
                raise ValueError(f"knob {name!r} has no bound in edgecnn.limits.KNOBS")
            bound = KNOBS[name]
            hint = KNOB_HINTS.get(name, "")
            parser.add_argument(flag, dest=name, type=bounded(bound, hint), metavar=name.upper(),
                                help=f"{bound.what} of {models}, in {bound.interval} (default "
                                     f"{f'{default:g}' if shared else 'the model' + chr(39) + 's own'}"
                                     f"{'; ' + hint if hint else ''}); e.g. {flag} "
                                     f"{0.5 if isinstance(default, float) else default}")
        else:
            raise ValueError(f"knob {name!r} is neither a number nor a switch")


def model_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The model knobs the user actually gave (unset ones are left to the model's defaults)."""
    from edgecnn.models.registry import tunable_knobs

    return {k: getattr(args, k) for k in tunable_knobs() if getattr(args, k, None) is not None}


def add_wide_arg(parser: argparse.ArgumentParser) -> None:
    """``--wide``: every column of the command's tables, however wide (see :func:`print_table`)."""
    parser.add_argument("--wide", action="store_true",
                        help="show every column of the tables even when wider than the terminal "
                             "(by default less important columns are left out to fit)")


def add_target_args(g: argparse._ArgumentGroup) -> None:
    """``--target`` and the ssh (board) and adb (phone) settings, for every command that measures."""
    g.add_argument("--target", default="local", metavar="T",
                   help="'local' (default), 'ssh://[user@]host[:port]' (a Linux board with python3, "
                        "NumPy and ai-edge-litert or tflite_runtime; user: a login name, host: a DNS name, "
                        "IPv4 or [IPv6] address, port 1-65535) or 'adb[:SERIAL]' (Android; SERIAL as --serial); "
                        "e.g. --target ssh://pi@raspberrypi.local")
    g.add_argument("--ssh-key", metavar="KEY", help="private key for ssh; e.g. --ssh-key ~/.ssh/id_ed25519")
    g.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="extra 'ssh -o' option, repeatable; e.g. --ssh-option StrictHostKeyChecking=accept-new")
    g.add_argument("--remote-python", default="python3", metavar="PY",
                   help="the board's Python (default python3); e.g. --remote-python /home/pi/venv/bin/python")
    g.add_argument("--remote-dir", metavar="DIR",
                   help="folder on the board for the runner and models (default: a temporary one, "
                        "removed afterwards); e.g. --remote-dir /home/pi/edgecnn")
    g.add_argument("--benchmark-binary", type=Path, metavar="FILE",
                   help="TFLite's benchmark_model built for the phone (adb target); "
                        "e.g. --benchmark-binary ./android_aarch64_benchmark_model")
    g.add_argument("--serial", metavar="S", help="adb device serial when several are attached, as 'adb devices' "
                                                  "lists it (letters, digits, . _ : - []); e.g. --serial emulator-5554")
    g.add_argument("--use-gpu", action="store_true",
                   help="adb: run with the GPU delegate (--use_gpu=true), one run per file without "
                        "--num_threads (thread counts are a CPU setting, as for local GPU runtimes)")
    g.add_argument("--use-nnapi", action="store_true", help="adb: run with the NNAPI delegate (--use_nnapi=true)")
    g.add_argument("--no-xnnpack", action="store_true", help="adb: --use_xnnpack=false (TFLite's reference CPU kernels)")


def target_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`edgecnn.pipelines.bench.target_from_url` from :func:`add_target_args`' flags."""
    return {"ssh_key": args.ssh_key, "ssh_options": args.ssh_option, "remote_python": args.remote_python,
            "remote_dir": args.remote_dir, "benchmark_binary": args.benchmark_binary, "serial": args.serial,
            "use_gpu": args.use_gpu, "use_nnapi": args.use_nnapi, "use_xnnpack": not args.no_xnnpack}
