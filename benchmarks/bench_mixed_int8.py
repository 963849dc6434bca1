"""What keeping layers in float costs (issue 12): FP32 vs full INT8 vs mixed INT8 on onnxruntime CPU.

    python benchmarks/bench_mixed_int8.py    # prints a table, writes runs/benchmarks/mixed_int8.json
    python benchmarks/bench_mixed_int8.py --update-results  # into benchmarks/results/, what docs/performance.md quotes

The model is the one the tests use: the trained digits ECA-ResNet-18 (32x32) with two planted outlier
channels (eca_deploy/testing/outliers.py; FP32 function unchanged). On the cpu target:
- full INT8: `quantize --calib-method auto` (every layer INT8; auto picks the method that survives),
  and `--calib-method minmax` (every layer INT8; the planted channels wreck it);
- mixed INT8: `quantize --calib-method minmax --max-top1-drop 1`, where minmax fails and the
  fallback leaves the most sensitive layers in float until the budget holds.
Top-1 of each on all held-out digits, then latency at batch 1 and 64 in interleaved rounds (medians;
each turn starts with an untimed run; onnxruntime's thread spinning off, see interleave.py).
On the tensorrt target the same comparison needs a GPU: build engines from both ONNX files with
`eca-deploy build` and time them with `eca-deploy bench`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from interleave import interleaved_latency
from output import add_output_args, out_path

BATCHES = (1, 64)


def top1(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    from eca_deploy.graph.session import make_session

    session = make_session(str(path))
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    return float(np.mean(logits.argmax(1) == labels))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved latency rounds per batch size")
    parser.add_argument("--iters", type=int, default=10, help="timed runs per model per round")
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime intra-op threads (default 1: a shared machine times more steadily)")
    parser.add_argument("--budget", type=float, default=1.0, help="--max-top1-drop for the mixed model, points")
    add_output_args(parser, "mixed_int8.json")
    args = parser.parse_args()
    args.out = out_path(args, "mixed_int8.json")

    import onnxruntime
    import torch

    from eca_deploy.artifacts import read_manifest, write_json
    from eca_deploy.calibration.quantize import QuantizeConfig, quantize
    from eca_deploy.data.sources import load_dataset
    from eca_deploy.testing.digits import build_digits
    from eca_deploy.testing.outliers import build_outlier_model

    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits = build_digits(work / "digits")
        calib = next(load_dataset(digits.calib_dir, digits.imgsz, 64, 0).batches(64))[0]
        model = build_outlier_model(digits.model, digits.checkpoint, digits.imgsz, torch.from_numpy(calib),
                                    work / "outliers")
        common = dict(onnx=model.onnx, calib_data=digits.calib_dir, val_data=digits.val_dir, target="cpu",
                      calib_cache=work / "ranges.json")
        full = quantize(QuantizeConfig(**common, output=work / "full.int8.cpu.onnx"))
        plain = quantize(QuantizeConfig(**common, calib_method="minmax", output=work / "minmax.int8.cpu.onnx"))
        mixed = quantize(QuantizeConfig(**common, calib_method="minmax", max_top1_drop=args.budget,
                                        output=work / "mixed.int8.cpu.onnx"))
        floated = read_manifest(mixed.path)["fallback"]
        batches = list(load_dataset(digits.val_dir, digits.imgsz).batches(512))
        images, labels = np.concatenate([b for b, _ in batches]), np.concatenate([y for _, y in batches])
        paths = {"FP32": model.onnx, f"INT8 full ({full.calibration['method']})": full.path,
                 "INT8 full (minmax)": plain.path,
                 f"INT8 mixed ({len(floated['float_layers'])} layers float)": mixed.path}
        accuracy = {name: top1(path, images, labels) for name, path in paths.items()}
        latency = {b: interleaved_latency(paths, b, digits.imgsz, args.rounds, args.iters, args.threads)
                   for b in BATCHES}

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
                    "python": platform.python_version(), "onnxruntime": onnxruntime.__version__},
        "model": f"eca_resnet18 trained on digits with planted outlier channels {list(model.tensors)}, "
                 f"{digits.imgsz}x{digits.imgsz}, onnxruntime CPUExecutionProvider, cpu target",
        "held_out_top1": {**accuracy, "images": int(len(labels))},
        "mixed": {"budget_points": args.budget, "float_layers": [f["tensor"] for f in floated["float_layers"]],
                  "steps": [{k: s[k] for k in ("float_layers", "top1_drop", "holds")} for s in floated["steps"]]},
        "latency_ms_median": {str(b): v for b, v in latency.items()},
        "speed_vs_fp32": {str(b): {k: v["FP32"] / ms for k, ms in v.items()} for b, v in latency.items()},
        "settings": vars(args),
    }
    header = "".join(f"{f'batch {b} ms':>13}{f'x FP32 b{b}':>12}" for b in BATCHES)
    print(f"\n{'onnxruntime CPU, ' + str(args.threads) + ' thread(s)':<34}{'top-1':>8}{header}")
    for name in paths:
        cells = "".join(f"{latency[b][name]:>13.2f}{result['speed_vs_fp32'][str(b)][name]:>12.2f}" for b in BATCHES)
        print(f"{name:<34}{100 * accuracy[name]:>7.2f}%{cells}")
    print(f"layers left in float: {', '.join(result['mixed']['float_layers'])}")
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
