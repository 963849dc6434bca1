"""``eca-deploy models``: the built-in model zoo."""

from __future__ import annotations

import argparse
import json

NAME = "models"
HELP = "list the built-in models with parameters, GFLOPs and ECA kernel size per stage"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--imgsz", type=int, default=224, help="input size at which GFLOPs are counted")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..models import get_spec, list_models
    from ..models.complexity import model_complexity

    rows = []
    for name in list_models():
        spec = get_spec(name)
        params, gmacs = model_complexity(name, args.imgsz)
        rows.append({"name": name, "params": params, "gflops": round(gmacs, 3),
                     "k": "".join(map(str, spec.default_k)) or "-", "description": spec.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<18}{'params':>13}{'GFLOPs':>9}  {'k':<6}description")
    for r in rows:
        print(f"{r['name']:<18}{r['params']:>13,}{r['gflops']:>9.3f}  {r['k']:<6}{r['description']}")
    print(f"\nGFLOPs are multiply-accumulates at {args.imgsz}x{args.imgsz}, as the ECA-Net paper counts them. "
          "timm's ECA models: --model timm:<name> (needs the timm extra).")
    return 0
