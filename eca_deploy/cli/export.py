"""``eca-deploy export``: PyTorch -> simplified, verified ONNX (and OpenVINO IR with --format openvino)."""

from __future__ import annotations

import argparse

from . import args as shared

NAME = "export"
HELP = ("export a model to ONNX with plain Conv1d ECA blocks, simplify it and verify it against PyTorch; "
        "optionally on to OpenVINO IR")
GROUPS = (shared.ModelArgs(), shared.OutputArgs("out_dir", "output folder (default: artifacts/<model>/)"),
          shared.SeedArgs("the random init (without --weights) and of the verification batch"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shared.add_groups(parser, GROUPS)
    parser.add_argument("--opset", type=shared.opset, default=17, help="ONNX opset version, 7 to 20")
    # Not --batch-size: this fixes the graph's batch axis, it is not how many images run at once.
    parser.add_argument("--static-batch", dest="static_batch", type=shared.positive_int, default=None, metavar="N",
                        help="fix the batch axis to N (default: a dynamic batch axis named 'batch')")
    shared.deprecated(parser, "--batch", "--static-batch", "static_batch", shared.positive_int)
    parser.add_argument("--imgsz", type=shared.image_size, default=224, help="input height and width, 32 or more")
    parser.add_argument("--num-classes", type=shared.positive_int, default=None,
                        help="classifier size when no weights are given (default: 1000; with weights, read from them)")
    parser.add_argument("--no-simplify", dest="simplify", action="store_false",
                        help="skip onnxsim (the export is still verified against PyTorch)")
    parser.add_argument("--format", default="onnx", choices=["onnx", "openvino"],
                        help="onnx: <model>.onnx; openvino: that ONNX, then OpenVINO IR <model>.xml + .bin "
                             "converted from it and verified against PyTorch too, with eca-deploy[openvino] installed")
    parser.add_argument("--fp16-weights", action="store_true",
                        help="with --format openvino: store the IR's weights as FP16 (<model>.fp16.xml, half "
                             "the size; computed in FP32, checked by cosine >= 0.9999 to PyTorch)")
    shared.add_input_format(parser)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..export.onnx_export import ExportConfig, export_model
    from ..models import TIMM_PREFIX, get_spec
    from ..models.download import resolve_weights

    if args.fp16_weights and args.format != "openvino":
        raise UsageError("--fp16-weights applies to --format openvino (for an FP16 ONNX use `eca-deploy "
                         "quantize --precision fp16`)")
    if args.input_format != "float-nchw" and args.format == "openvino":
        raise UsageError("--input-format uint8-nhwc applies to --format onnx (the OpenVINO IR export verifies "
                         "float inputs only; OpenVINO can run the uint8 ONNX itself: openvino:<file.onnx>)")
    fields = shared.fields(GROUPS, args)
    if not fields["model"].startswith(TIMM_PREFIX):
        get_spec(fields["model"])  # an unknown name fails before anything is printed
    fields["weights"] = resolve_weights(fields["weights"])  # a missing file too; a URL is downloaded first
    cfg = ExportConfig(**fields, opset=args.opset, static_batch=args.static_batch, imgsz=args.imgsz,
                       simplify=args.simplify, num_classes=args.num_classes, input_format=args.input_format)
    print(f"exporting {cfg.model}" + (f" with weights {cfg.weights}" if cfg.weights else " (random weights)")
          + " ...", flush=True)
    if args.format == "openvino":
        return _run_openvino(cfg, args.fp16_weights)
    result = export_model(cfg)
    blocks = result.eca_blocks
    ks = sorted({k for _, _, k in blocks})
    last = result.parity.get("simplify", result.parity["export"])
    print(f"wrote {result.onnx_path} ({result.onnx_path.stat().st_size / 2**20:.1f} MB) "
          f"and {result.manifest_path.name}")
    if cfg.input_format != "float-nchw":
        print(f"  input: {cfg.input_format} (uint8 [N, {cfg.imgsz}, {cfg.imgsz}, 3] RGB; cast, mean/std and layout "
              "in the graph)")
    print(f"  ECA blocks: {len(blocks)} plain Conv1d on [N,1,C] (k in {ks})" if blocks else "  no ECA blocks")
    print(f"  parity vs PyTorch: max abs {last['max_abs']:.2e} after "
          f"{'onnxsim' if 'simplify' in result.parity else 'export'} (limit {last['limit']:.0e})")
    print(f"  time: {result.timings['total']:.1f} s")
    return 0


def _run_openvino(cfg, fp16_weights: bool) -> int:
    from ..export.openvino_export import export_openvino

    result = export_openvino(cfg, fp16_weights)
    size = (result.xml_path.stat().st_size + result.bin_path.stat().st_size) / 2**20
    print(f"wrote {result.onnx.onnx_path} and {result.onnx.manifest_path.name}")
    print(f"wrote {result.xml_path} + {result.bin_path.name} ({size:.1f} MB, {result.precision} weights) "
          f"and {result.manifest_path.name}")
    check = result.parity
    if "limit" in check:
        print(f"  parity vs PyTorch (OpenVINO CPU, f32): max abs {check['max_abs']:.2e} (limit {check['limit']:.0e})")
    else:
        print(f"  parity vs PyTorch (OpenVINO CPU, f32): worst cosine {check['min_cosine']:.6f} "
              f"(limit {check['min_cosine_limit']}), max abs {check['max_abs']:.2e}")
    print(f"  time: {result.onnx.timings['total'] + result.timings['total']:.1f} s")
    return 0
