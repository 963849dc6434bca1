"""FP16 / INT8 on onnxruntime CPU, and what 512-image calibration costs (issue 3).

    python benchmarks/bench_quantize.py          # prints a table, writes runs/benchmarks/quantize.json
    python benchmarks/bench_quantize.py --update-results  # into benchmarks/results/, what docs/performance.md quotes

1. Calibration of eca_resnet50 at 224 on 512 real-looking JPEGs (crops of the two photos scikit-learn
   ships, at varied sizes; or --images DIR): wall time of the calibration step and peak RSS of the
   whole quantize process, measured in a child process; then the same run again from the range cache.
2. Latency of eca_resnet50 FP32 vs FP16 vs INT8 (cpu target) vs INT8 (tensorrt target) on onnxruntime
   CPU at batch 1 and 8, timed in interleaved rounds (medians; each turn starts with an untimed run;
   onnxruntime's thread spinning off, see interleave.py).
   The tensorrt-target model is meant for TensorRT; it is timed here only to show why the cpu target exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from interleave import interleaved_latency
from output import add_output_args, out_path


CHILD = """
import json, sys
from eca_deploy.calibration.quantize import QuantizeConfig, quantize
r = quantize(QuantizeConfig(**json.loads(sys.argv[1])))
print(json.dumps({"timings": r.timings, "calibration": {k: v for k, v in r.calibration.items() if k != "skipped"}}))
"""


def make_images(folder: Path, count: int, seed: int) -> Path:
    """Random crops (position, size, aspect, mirror) of two real photos, resized and saved as JPEG."""
    from PIL import Image, ImageOps
    from sklearn.datasets import load_sample_image

    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.fromarray(load_sample_image(name)) for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    for i in range(count):
        photo = photos[i % 2]
        w = int(photo.width * rng.uniform(0.3, 1.0))
        h = int(min(photo.height, w * rng.uniform(0.6, 1.4)))
        x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        crop = photo.crop((x, y, x + w, y + h))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        scale = rng.uniform(256, 500) / max(crop.size)
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.BILINEAR)
        crop.save(folder / f"img_{i:04d}.jpg", quality=90)
    return folder


def quantize_in_child(cfg: dict) -> dict:
    """Run quantize() in a fresh process; its peak RSS comes from wait4, so nothing else is counted."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"quantize child failed with {cfg}")
    return {**json.loads(output), "peak_rss_gib": usage.ru_maxrss / 2**20}  # ru_maxrss is in KiB on Linux


def main() -> int:
    from eca_deploy.artifacts import write_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=None, help="calibration images (default: 512 generated JPEGs)")
    parser.add_argument("--count", type=int, default=512, help="calibration images")
    parser.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="entropy",
                        help="calibration method timed (entropy and percentile build histograms; minmax does not)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved latency rounds per batch size")
    parser.add_argument("--iters", type=int, default=5, help="timed runs per model per round")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    add_output_args(parser, "quantize.json")
    args = parser.parse_args()
    args.out = out_path(args, "quantize.json")

    import onnx
    import onnxruntime

    from eca_deploy.calibration.quantize import QuantizeConfig, quantize
    from eca_deploy.errors import ParityError
    from eca_deploy.calibration.fp16 import convert_to_fp16
    from eca_deploy.export.onnx_export import ExportConfig, export_model

    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = export_model(ExportConfig(model="eca_resnet50", out_dir=str(work))).onnx_path
        images = Path(args.images) if args.images else make_images(work / "images", args.count, seed=0)
        cache = work / "ranges.json"
        base = dict(onnx=str(fp32), calib_data=str(images), calib_method=args.method, calib_count=args.count,
                    calib_cache=str(cache), check_count=16)
        cold = quantize_in_child({**base, "target": "tensorrt", "output": str(work / "trt.onnx")})
        warm = quantize_in_child({**base, "target": "tensorrt", "output": str(work / "trt2.onnx")})
        cpu = quantize(QuantizeConfig(**{**base, "target": "cpu", "output": work / "cpu.onnx"}))
        fp16_path = work / "fp16.onnx"
        try:
            fp16_gate = quantize(QuantizeConfig(onnx=fp32, precision="fp16", calib_data=images, check_count=16,
                                                output=fp16_path)).parity
        except ParityError as exc:
            # Random-init ResNet-50 amplifies FP16 weight rounding; time the model all the same.
            fp16_gate = str(exc)
            fp16_path.write_bytes(convert_to_fp16(onnx.load(str(fp32)))[0].SerializeToString())
        paths = {"FP32": fp32, "FP16": fp16_path, "INT8 (cpu target)": cpu.path,
                 "INT8 (tensorrt target)": work / "trt.onnx"}
        latency = {b: interleaved_latency(paths, b, 224, args.rounds, args.iters, args.threads) for b in (1, 8)}
        parity = {"FP16 check": fp16_gate, "INT8 (cpu target)": cpu.parity}

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__},
        "model": "eca_resnet50 (random init), 224x224, onnxruntime CPUExecutionProvider",
        "calibration": {"images": cold["calibration"]["images"], "method": args.method,
                        "tensors": cold["calibration"]["tensors"],
                        "calibrate_seconds": cold["timings"]["calibrate"],
                        "quantize_process_peak_rss_gib": cold["peak_rss_gib"],
                        "cached_rerun_calibrate_seconds": warm["timings"]["calibrate"],
                        "cached_rerun_peak_rss_gib": warm["peak_rss_gib"],
                        "cpu_target_tensors": cpu.calibration["tensors"],
                        "cpu_target_calibrate_seconds": cpu.timings["calibrate"]},
        "latency_ms_median": {str(b): v for b, v in latency.items()},
        "speedup_vs_fp32": {str(b): {k: v["FP32"] / ms for k, ms in v.items()} for b, v in latency.items()},
        "parity_vs_fp32_on_16_images": parity,  # random weights: not an accuracy figure
        "settings": vars(args),
    }
    cal = result["calibration"]
    print(f"calibration ({args.method}, {cal['images']} images, {cal['tensors']} tensors): "
          f"{cal['calibrate_seconds']:.1f} s, peak RSS {cal['quantize_process_peak_rss_gib']:.2f} GiB; "
          f"from the cache: {cal['cached_rerun_calibrate_seconds']:.2f} s; cpu target "
          f"({cal['cpu_target_tensors']} tensors): {cal['cpu_target_calibrate_seconds']:.1f} s")
    print(f"\n{'eca_resnet50, onnxruntime CPU':<26}{'batch 1 ms':>12}{'batch 8 ms':>12}{'x FP32 b1':>11}{'x FP32 b8':>11}")
    for name in paths:
        s1, s8 = result["speedup_vs_fp32"]["1"][name], result["speedup_vs_fp32"]["8"][name]
        print(f"{name:<26}{latency[1][name]:>12.1f}{latency[8][name]:>12.1f}{s1:>11.2f}{s8:>11.2f}")
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
