"""``eca-deploy export``: PyTorch -> simplified, verified ONNX."""

from __future__ import annotations

import argparse

from . import args as shared

NAME = "export"
HELP = "export a model to ONNX with plain Conv1d ECA blocks, simplify it and verify it against PyTorch"
GROUPS = (shared.ModelArgs(), shared.OutputArgs("out_dir", "output folder (default: artifacts/<model>/)"),
          shared.SeedArgs("the verification batch"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shared.add_groups(parser, GROUPS)
    parser.add_argument("--opset", type=shared.opset, default=17, help="ONNX opset version, 7 to 20")
    # Not --batch-size: this fixes the graph's batch axis, it is not how many images run at once.
    parser.add_argument("--static-batch", dest="batch", type=shared.positive_int, default=None, metavar="N",
                        help="fix the batch axis to N (default: a dynamic batch axis named 'batch')")
    shared.deprecated(parser, "--batch", "--static-batch", "batch", shared.positive_int)
    parser.add_argument("--imgsz", type=shared.image_size, default=224, help="input height and width, 32 or more")
    parser.add_argument("--num-classes", type=shared.positive_int, default=None,
                        help="classifier size when no weights are given (default 1000; with weights, read from them)")
    parser.add_argument("--no-simplify", dest="simplify", action="store_false",
                        help="skip onnxsim (the export is still verified against PyTorch)")


def run(args: argparse.Namespace) -> int:
    from ..export.onnx_export import ExportConfig, export_model

    cfg = ExportConfig(**shared.fields(GROUPS, args), opset=args.opset, batch=args.batch, imgsz=args.imgsz,
                       simplify=args.simplify, num_classes=args.num_classes)
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
