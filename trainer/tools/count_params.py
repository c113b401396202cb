"""count-params CONFIG: the model's parameter count, in total and per module."""

from __future__ import annotations

import argparse

from torchyard.trainer.tools.common import build_model, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a training config; its model is built (no weights are loaded)")
    parser.add_argument("--depth", type=int, default=1,
                        help="list modules nested up to this many levels below the model (default 1)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys")


def run(args: argparse.Namespace) -> None:
    model = build_model(load_config(args.config, args.cfg_options))
    print(format_table(parameter_table(model, args.depth)))


def parameter_table(model, depth: int = 1) -> list[tuple[str, str, int, int]]:
    """``(name, type, parameters, trainable parameters)`` per module up to ``depth``, the model first as
    ``(total)``; a module's count includes its children."""
    rows = []
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if level > depth:
            continue
        params = list(module.parameters())
        rows.append((name or "(total)", type(module).__name__, sum(p.numel() for p in params),
                     sum(p.numel() for p in params if p.requires_grad)))
    return rows


def format_table(rows: list[tuple[str, str, int, int]]) -> str:
    header = ("module", "type", "parameters", "trainable")
    name_width = max(len(header[0]), *(len(r[0]) for r in rows))
    type_width = max(len(header[1]), *(len(r[1]) for r in rows))
    lines = [f"{header[0]:<{name_width}}  {header[1]:<{type_width}}  {header[2]:>12}  {header[3]:>12}"]
    lines += [f"{name:<{name_width}}  {kind:<{type_width}}  {total:>12,}  {trainable:>12,}"
              for name, kind, total, trainable in rows]
    return "\n".join(lines)
