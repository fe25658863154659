"""Flags and output helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from typing import Any, Callable, NoReturn

from edgecnn.errors import EXIT_USAGE
from edgecnn.limits import ALPHA, IN_CHANS, NUM_CLASSES, PHI, PUBLISHED_ALPHAS, RES, Bound


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


ALPHA_HINT = "published values are " + "; ".join(
    f"{family} {', '.join(map(str, values))}" for family, values in PUBLISHED_ALPHAS.items())


def add_model_args(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    """MODEL plus the scaling knobs, in the papers' vocabulary."""
    parser.add_argument("model", metavar="MODEL",
                        help="zoo name or alias, e.g. mobilenet, mobilenet_v2, efficientnet_b0 "
                             "(see 'edgecnn models')")
    parser.add_argument("--alpha", type=bounded(ALPHA, ALPHA_HINT), metavar="A",
                        help="width multiplier of MobileNets, in (0, 4] (paper values 0.25/0.5/0.75/1.0 for V1, "
                             "0.35-1.4 for V2, 0.75/1.0 for V3); e.g. --alpha 0.5")
    parser.add_argument("--phi", type=bounded(PHI), metavar="PHI",
                        help="EfficientNet compound coefficient for your own scaled variant "
                             "(width 1.1^phi, depth 1.2^phi, resolution 1.15^phi); e.g. --phi 0.5")
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


def model_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The scaling knobs the user actually gave (unset ones are left to the model's defaults)."""
    return {k: getattr(args, k) for k in ("alpha", "phi") if getattr(args, k, None) is not None}


def add_wide_arg(parser: argparse.ArgumentParser) -> None:
    """``--wide``: every column of the command's tables, however wide (see :func:`print_table`)."""
    parser.add_argument("--wide", action="store_true",
                        help="show every column of the tables even when wider than the terminal "
                             "(by default less important columns are left out to fit)")
