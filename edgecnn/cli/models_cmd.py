"""``edgecnn models`` and ``edgecnn info``: what is in the zoo, and how big each model is."""

from __future__ import annotations

import argparse

import torch

from edgecnn.cli.common import add_model_args, add_wide_arg, model_knobs
from edgecnn.console import emit_json, human_bytes, human_count, print_table
from edgecnn.models import create_model, get_spec, list_aliases, list_models
from edgecnn.stats import model_stats


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models", help="list every model with params and MACs at its default resolution",
        description="List every registered model with its parameter count and MACs "
                    "(multiply-accumulates, batch 1) at its default resolution and class count.",
        epilog="examples:\n  edgecnn models --family mobilenet_v1\n  edgecnn models --json\n"
               "  edgecnn models --markdown > table.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", help="only this family, e.g. efficientnet")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    out.add_argument("--markdown", action="store_true",
                     help="print a Markdown table (the README's model table is made with this)")
    add_wide_arg(p)
    p.set_defaults(func=run_models)

    p = sub.add_parser(
        "info", help="parameters, MACs, weight and activation bytes of one model",
        description="Build one model (on PyTorch's meta device: no weights are allocated) and "
                    "report its parameters, MACs, weight bytes at fp32/fp16/int8 and peak "
                    "activation bytes for one image.",
        epilog="examples:\n  edgecnn info mobilenet --alpha 0.5 --res 160\n"
               "  edgecnn info efficientnet_b3 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, weights=False)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_wide_arg(p)
    p.set_defaults(func=run_info)


def describe(name: str, res: int | None = None, num_classes: int | None = None,
             in_chans: int | None = None, **knobs) -> dict:
    """Everything ``info`` reports about one model, as a JSON-ready dict (MACs, bytes)."""
    spec = get_spec(name)
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, in_chans=in_chans, **knobs)
    cfg = model.edgecnn_config
    res = spec.check_res(res if res is not None else cfg.default_res)
    stats = model_stats(model, res=res)
    return {
        "name": spec.name, "family": spec.family, "aliases": list(spec.aliases),
        "knobs": cfg.knobs, "num_classes": cfg.num_classes, "in_chans": cfg.in_chans,
        "default_res": cfg.default_res, "res": res, "min_res": spec.min_res,
        "fixed_res": spec.fixed_res, "input_shape": list(stats.input_shape),
        "params": stats.params, "macs": stats.macs, "macs_convention": "1 MAC = 1 multiply-add",
        "weight_bytes": {"fp32": stats.weight_bytes_fp32, "fp16": stats.weight_bytes_fp16,
                         "int8": stats.weight_bytes_int8},
        "peak_activation_bytes": stats.peak_activation_bytes, "mean": list(cfg.mean),
        "std": list(cfg.std), "paper": spec.paper,
    }


def run_models(args: argparse.Namespace) -> int:
    from rich.progress import track

    names = list_models(args.family)
    if not names:
        from edgecnn.errors import EdgeCNNError

        families = sorted({get_spec(n).family for n in list_models()})
        raise EdgeCNNError(f"no family {args.family!r}; families: {', '.join(families)}")
    rows = [describe(n) for n in track(names, description="measuring", transient=True,
                                       disable=args.json or args.markdown)]
    aliases = aliases_by_model()
    if args.json:
        emit_json({"models": rows})
        return 0
    if args.markdown:
        print(markdown_table(rows))
        return 0
    print_table(f"{len(rows)} models (MACs: multiply-adds per image at the default resolution)",
                ["name", "family", "params", "MACs", "res", "aliases"],
                [[r["name"], r["family"], human_count(r["params"]), human_count(r["macs"]),
                  r["default_res"], ", ".join(aliases.get(r["name"], []))] for r in rows],
                justify=["left", "left", "right", "right", "right", "left"], optional=["aliases", "family"],
                wide=args.wide)
    return 0


def aliases_by_model() -> dict[str, list[str]]:
    """Canonical name -> the aliases that point at it."""
    aliases: dict[str, list[str]] = {}
    for alias, target in list_aliases().items():
        aliases.setdefault(target, []).append(alias)
    return aliases


def markdown_table(rows: list[dict]) -> str:
    """The README's model table: name, family, params, MACs at the default resolution."""
    aliases = aliases_by_model()
    lines = ["| model | family | params | MACs | default res | aliases |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    lines += [f"| `{r['name']}` | {r['family']} | {r['params']:,} | {human_count(r['macs'])} | "
              f"{r['default_res']} | {', '.join(f'`{a}`' for a in aliases.get(r['name'], []))} |"
              for r in rows]
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    info = describe(args.model, res=args.res, num_classes=args.num_classes, in_chans=args.in_chans,
                    **model_knobs(args))
    if args.json:
        emit_json(info)
        return 0
    knobs = ", ".join(f"{k}={v}" for k, v in info["knobs"].items()) or "none"
    print_table(f"{info['name']} ({info['family']}; {info['paper'] or 'no paper recorded'})",
                ["", ""], [
                    ["knobs", knobs],
                    ["input", "x".join(map(str, info["input_shape"])) + " (N, C, H, W)"],
                    ["default / min resolution", f"{info['default_res']} / {info['min_res']} px"],
                    ["classes", info["num_classes"]],
                    ["parameters", f"{info['params']:,} ({human_count(info['params'])})"],
                    ["MACs (multiply-adds)", f"{info['macs']:,} ({human_count(info['macs'])})"],
                    ["weights fp32 / fp16 / int8", " / ".join(
                        human_bytes(info["weight_bytes"][k]) for k in ("fp32", "fp16", "int8"))],
                    ["peak activations (fp32, one layer in+out)",
                     human_bytes(info["peak_activation_bytes"])],
                ], wide=args.wide)
    return 0
