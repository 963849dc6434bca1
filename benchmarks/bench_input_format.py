"""Images in as bytes: end-to-end images/s on the CPU, float-nchw model vs uint8-nhwc model, side by side.

    python benchmarks/bench_input_format.py      # prints the table, writes runs/benchmarks/input_format.json
    python benchmarks/bench_input_format.py --update-results  # into benchmarks/results/

1. --model exported twice at --imgsz (random init, dynamic batch): `export` (float-nchw) and
   `export --input-format uint8-nhwc`, each verified against PyTorch by export itself.
2. --images JPEG crops of the two photos scikit-learn ships (benchmarks/bench_quantize.make_images), of
   256 to 500 pixels on the long side.
3. One end-to-end call = read + decode + resize + centre-crop every JPEG of the batch (data.preprocess), then
   float: Python normalisation (numpy, per image) + stack + the float model; uint8: stack + the uint8 model
   (cast, mean/std and layout inside the graph). Both through the harness's onnxruntime CPU backend with
   --threads. The two take turns round by round (drift and other jobs hit both alike); images/s = batch /
   median seconds per call. Each stage is also timed alone (decode, normalise, model) at the same batch.
4. Parity: the two models' logits on every image (max abs difference and error / logit scale), the uint8
   one fed the bytes; and an experiment, "shift folded": the uint8 graph with its mean shift (the Sub) folded
   into the first convolution's bias, which export does not do: that convolution zero-pads, and a zero
   in normalised space is the mean colour in pixel space, so the border pixels come out wrong.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_quantize import make_images
from output import add_output_args, out_path

FORMATS = ("float-nchw", "uint8-nhwc")


def export_both(work: Path, model: str, imgsz: int) -> dict[str, Path]:
    from eca_deploy.export.onnx_export import ExportConfig, export_model

    return {fmt: export_model(ExportConfig(model=model, out_dir=str(work / fmt), imgsz=imgsz,
                                           input_format=fmt)).onnx_path for fmt in FORMATS}


def end_to_end(files: list[Path], backend, imgsz: int, config):
    """One call: every file decoded, resized and cropped; normalised in Python only for a float model."""
    from eca_deploy.data.pixels import INPUT_FORMATS
    from eca_deploy.data.preprocess import pixels_file

    fmt = INPUT_FORMATS[backend.input_format]

    def step():
        return backend.infer(np.stack([fmt.from_pixels(pixels_file(f, imgsz, config), config) for f in files]))
    return step


def timed_calls(step, iterations: int) -> list[float]:
    """Seconds of each of ``iterations`` calls of ``step``."""
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def measure(paths: dict[str, Path], files: list[Path], batches: tuple[int, ...], imgsz: int, rounds: int,
            iterations: int, threads: int) -> dict:
    """{format: {batch: {"images_per_s", "ms_per_call"}}} end to end, plus each stage alone."""
    from eca_deploy.data.pixels import INPUT_FORMATS
    from eca_deploy.data.preprocess import DEFAULT_DATA_CONFIG as config
    from eca_deploy.data.preprocess import normalize, pixels_file
    from eca_deploy.runtime.registry import open_backend

    backends = {fmt: open_backend(str(path), provider="cpu", threads=threads) for fmt, path in paths.items()}
    samples = {(fmt, b): [] for fmt in FORMATS for b in batches}
    stages = {name: {b: [] for b in batches} for name in ("decode", "normalize", *(f"model {f}" for f in FORMATS))}
    try:
        for b in batches:  # one untimed call each: sessions warm, files in the page cache
            for fmt in FORMATS:
                end_to_end(files[:b], backends[fmt], imgsz, config)()
        for r in range(rounds):
            for b in batches:
                chunk = [files[(r * b + i) % len(files)] for i in range(b)]
                for fmt in FORMATS:
                    samples[(fmt, b)] += timed_calls(end_to_end(chunk, backends[fmt], imgsz, config), iterations)
                decoded = [pixels_file(f, imgsz, config) for f in chunk]
                stages["decode"][b] += timed_calls(lambda: [pixels_file(f, imgsz, config) for f in chunk],
                                                      iterations)
                stages["normalize"][b] += timed_calls(lambda: np.stack([normalize(p, config) for p in decoded]),
                                                         iterations)
                for fmt in FORMATS:
                    batch = np.stack([INPUT_FORMATS[fmt].from_pixels(p, config) for p in decoded])
                    stages[f"model {fmt}"][b] += timed_calls(lambda: backends[fmt].infer(batch), iterations)
        checks = parity(backends, fold_shift(paths["uint8-nhwc"], paths["uint8-nhwc"].with_name("folded.onnx")),
                        files, imgsz, config)
    finally:
        for backend in backends.values():
            backend.close()
    end = {fmt: {b: {"ms_per_call": 1e3 * statistics.median(samples[(fmt, b)]),
                     "images_per_s": b / statistics.median(samples[(fmt, b)]),
                     "calls": len(samples[(fmt, b)])} for b in batches} for fmt in FORMATS}
    alone = {name: {b: 1e3 * statistics.median(v) for b, v in per.items()} for name, per in stages.items()}
    return {"end_to_end": end, "stage_ms": alone, "parity_vs_float_model": checks}


def fold_shift(path: Path, out: Path) -> Path:
    """The uint8 graph with Sub(255 mean) -> Conv(W, b) rewritten as Conv(W, b - sum(W * 255 mean))."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    sub, conv = (n for n in model.graph.node[2:4])
    assert (sub.op_type, conv.op_type) == ("Sub", "Conv"), "export's graph starts Cast, Transpose, Sub, Conv"
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    values |= {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
               for n in model.graph.node if n.op_type == "Constant"}
    weight, bias = values[conv.input[1]], values[conv.input[2]]
    folded = bias - (weight * values[sub.input[1]].reshape(1, -1, 1, 1)).sum(axis=(1, 2, 3))
    model.graph.initializer.append(numpy_helper.from_array(folded.astype(np.float32), conv.input[2] + "_folded"))
    conv.input[0], conv.input[2] = sub.input[0], conv.input[2] + "_folded"
    model.graph.node.remove(sub)
    onnx.save(model, str(out))
    return out


def parity(backends: dict, folded: Path, files: list[Path], imgsz: int, config) -> dict:
    """Logit differences to the float model on Python-normalised floats, over every image."""
    from eca_deploy.data.pixels import INPUT_FORMATS
    from eca_deploy.data.preprocess import pixels_file
    from eca_deploy.graph.compare import scaled_error
    from eca_deploy.graph.session import run_once

    decoded = [pixels_file(f, imgsz, config) for f in files]
    logits = {fmt: backend.infer(np.stack([INPUT_FORMATS[fmt].from_pixels(p, config) for p in decoded]))
              for fmt, backend in backends.items()}
    logits["shift folded"] = run_once(folded, np.stack(decoded))
    reference = logits["float-nchw"]
    return {name: {"max_abs": float(np.abs(values - reference).max()),
                   "error_per_logit_scale": float(scaled_error(reference, values)),
                   "top1_agreement": float(np.mean(values.argmax(1) == reference.argmax(1)))}
            for name, values in logits.items() if name != "float-nchw"}


def print_table(result: dict, batches: tuple[int, ...]) -> None:
    end, stage = result["end_to_end"], result["stage_ms"]
    print("\n| batch | float-nchw img/s | uint8-nhwc img/s | speed-up | decode+resize ms | normalise ms | "
          "float model ms | uint8 model ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in batches:
        f, u = end["float-nchw"][b]["images_per_s"], end["uint8-nhwc"][b]["images_per_s"]
        print(f"| {b} | {f:.1f} | {u:.1f} | {u / f:.2f}x | {stage['decode'][b]:.2f} | {stage['normalize'][b]:.2f} | "
              f"{stage['model float-nchw'][b]:.2f} | {stage['model uint8-nhwc'][b]:.2f} |")
    print("\n| vs the float model on Python-normalised floats | max abs | error / logit scale | top-1 agreement |")
    print("|---|---:|---:|---:|")
    for name, check in result["parity_vs_float_model"].items():
        label = "uint8-nhwc model (as exported)" if name == "uint8-nhwc" else "uint8, mean shift folded into bias"
        print(f"| {label} | {check['max_abs']:.2e} | {check['error_per_logit_scale']:.2e} | "
              f"{check['top1_agreement']:.3f} |")


def main() -> int:
    from eca_deploy.artifacts import package_versions, write_json
    from eca_deploy.runtime.harness.device import describe_device

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="eca_resnet50", help="registered model to export (random weights)")
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--images", type=int, default=16, help="JPEG files decoded in turn")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--iterations", type=int, default=5, help="timed calls per format, batch and round")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    add_output_args(parser, "input_format.json")
    args = parser.parse_args()
    args.out = out_path(args, "input_format.json")
    batches = (1, 8)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = export_both(work, args.model, args.imgsz)
        files = sorted(make_images(work / "images", args.images, seed=0).glob("*.jpg"))
        result = measure(paths, files, batches, args.imgsz, args.rounds, args.iterations, args.threads)

    print_table(result, batches)
    result = {
        "command": " ".join(["python", "benchmarks/bench_input_format.py", *sys.argv[1:]]),
        "machine": {**describe_device(args.threads)["cpu"], "load_average_at_end": os.getloadavg(),
                    "python": platform.python_version(),
                    "versions": package_versions("onnxruntime", "torch", "pillow")},
        **result, "settings": vars(args),
    }
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
