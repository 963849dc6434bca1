"""``eca-deploy export``: PyTorch -> simplified, verified ONNX."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a model to ONNX with plain Conv1d ECA blocks, simplify it and verify it against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="registered model name (see `eca-deploy models`) or timm:<name> for timm's ECA models")
    parser.add_argument("--weights", default=None,
                        help="checkpoint: official .pth.tar, a bare state_dict, or .safetensors; ECA kernel "
                             "sizes and class count are read from it (default: random init)")
    parser.add_argument("--out", default=None, help="output folder (default: artifacts/<model>/)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument("--batch", type=int, default=None,
                        help="static batch size (default: dynamic batch axis named 'batch')")
    parser.add_argument("--imgsz", type=int, default=224, help="input height and width, 32 or more")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier size when no weights are given (default 1000; with weights, read from them)")
    parser.add_argument("--no-simplify", dest="simplify", action="store_false",
                        help="skip onnxsim (the export is still verified against PyTorch)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random init (without --weights) and of the verification batch")


def run(args: argparse.Namespace) -> int:
    from ..export.onnx_export import ExportConfig, export_model
    from ..models import TIMM_PREFIX, get_spec

    cfg = ExportConfig(model=args.model, weights=args.weights, out_dir=args.out, opset=args.opset,
                       batch=args.batch, imgsz=args.imgsz, simplify=args.simplify,
                       num_classes=args.num_classes, seed=args.seed)
    if not cfg.model.startswith(TIMM_PREFIX):
        get_spec(cfg.model)  # an unknown name fails before anything is printed
    print(f"exporting {cfg.model}" + (f" with weights {cfg.weights}" if cfg.weights else " (random weights)")
          + " ...", flush=True)
    result = export_model(cfg)
    blocks = result.eca_blocks
    ks = sorted({k for _, _, k in blocks})
    last = result.parity.get("simplify", result.parity["export"])
    print(f"wrote {result.onnx_path} ({result.onnx_path.stat().st_size / 2**20:.1f} MB) "
          f"and {result.manifest_path.name}")
    print(f"  ECA blocks: {len(blocks)} plain Conv1d on [N,1,C] (k in {ks})" if blocks else "  no ECA blocks")
    print(f"  parity vs PyTorch: max abs {last['max_abs']:.2e} after "
          f"{'onnxsim' if 'simplify' in result.parity else 'export'} (limit {last['limit']:.0e})")
    print(f"  time: {result.timings['total']:.1f} s")
    return 0
