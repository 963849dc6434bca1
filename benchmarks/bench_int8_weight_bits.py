"""What 7-bit INT8 weights cost against 8-bit ones on the cpu target, by the math and on this CPU.

    python benchmarks/bench_int8_weight_bits.py   # prints a table, writes runs/benchmarks/int8_weight_bits.json
    (--update-results writes benchmarks/results/int8_weight_bits.json, the committed figures)

x86 CPUs without VNNI add onnxruntime's (and OpenVINO's) u8 x s8 products pairwise in int16 and saturate
8-bit weights; 7-bit ones ([-63, 63]) cannot saturate (2 x 255 x 64 < 32767), so `quantize --target cpu`
uses them unless given --cpu-vnni. The model is the one the tests use: the trained digits ECA-ResNet-18
(32x32), quantized with --calib-method auto both ways. For each, held-out top-1 (all 540 images):
- the math: onnxruntime with its Q/DQ fusion off (session.disable_quant_qdq; Q/DQ in float, as ONNX defines them);
- this CPU's default onnxruntime session (fused integer kernels), and the answers that differ from the math;
- the 8-bit model with session.x64quantprecision=1 (onnxruntime rewrites s8 weights of QLinearConv/QGemm/
  MatMulInteger/... to u8 and runs its slower u8u8 kernels, on x86 only; 7-bit weights it leaves alone).
Then latency at batch 1 and 32, interleaved rounds (medians). The pytest header and the JSON say which CPU
features the machine had: on a VNNI CPU the default session cannot saturate, so the AVX2 column needs an
AVX2-only machine (tests/calibration/test_cpu_int8.py emulates the int16 pair sums in numpy).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from interleave import interleaved_sessions
from output import add_output_args, out_path

BATCHES = (1, 32)


def session(path: Path, optimized: bool = True, x64quantprecision: bool = False, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimized:
        options.add_session_config_entry("session.disable_quant_qdq", "1")  # as eca_deploy's make_session
    if x64quantprecision:
        options.add_session_config_entry("session.x64quantprecision", "1")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def predictions(sess, images: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + 256]})[0].argmax(1) for i in range(0, len(images), 256)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved latency rounds per batch size")
    parser.add_argument("--iters", type=int, default=10, help="timed runs per model per round")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    add_output_args(parser, "int8_weight_bits.json")
    args = parser.parse_args()
    out = out_path(args, "int8_weight_bits.json")

    import onnx
    import onnxruntime

    from eca_deploy.artifacts import write_json
    from eca_deploy.calibration.quantize import QuantizeConfig, quantize
    from eca_deploy.data.sources import load_dataset
    from eca_deploy.graph.cpu import describe_features, this_cpu_features, weight_bits
    from eca_deploy.testing.digits import cached_digits

    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits = cached_digits(Path(tempfile.gettempdir()) / "eca-deploy-test-cache")
        batches = list(load_dataset(digits.val_dir, digits.imgsz).batches(512))
        images, labels = np.concatenate([b for b, _ in batches]), np.concatenate([y for _, y in batches])
        common = dict(onnx=digits.onnx, calib_data=digits.calib_dir, val_data=digits.val_dir, check_count=None,
                      target="cpu", calib_cache=work / "ranges.json")
        models = {"7-bit weights": quantize(QuantizeConfig(**common, output=work / "w7.onnx")),
                  "8-bit weights (--cpu-vnni)": quantize(QuantizeConfig(**common, cpu_vnni=True,
                                                                        output=work / "w8.onnx"))}
        fp32 = predictions(session(digits.onnx), images)
        rows, timed = {}, {"FP32": session(digits.onnx, threads=args.threads)}
        for name, result in models.items():
            math = predictions(session(result.path, optimized=False), images)
            here = predictions(session(result.path), images)
            precise = predictions(session(result.path, x64quantprecision=True), images)
            rows[name] = {"method": result.calibration["method"],
                          "weight_bits": weight_bits(onnx.load(str(result.path))),
                          "top1_math": float(np.mean(math == labels)), "top1_this_cpu": float(np.mean(here == labels)),
                          "this_cpu_answers_differ_from_math": int(np.sum(here != math)),
                          "top1_x64quantprecision": float(np.mean(precise == labels)),
                          "agreement_with_fp32_math": float(np.mean(math == fp32))}
            timed[name] = session(result.path, threads=args.threads)
            timed[name + " + x64quantprecision"] = session(result.path, x64quantprecision=True, threads=args.threads)
        latency = {b: interleaved_sessions(timed, b, digits.imgsz, args.rounds, args.iters) for b in BATCHES}

    features = this_cpu_features()
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_features": features,
                    "cores": os.cpu_count(), "load_average_at_start": load_at_start,
                    "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__},
        "model": f"eca_resnet18 trained on digits, {digits.imgsz}x{digits.imgsz}, quantize --target cpu, "
                 f"onnxruntime CPUExecutionProvider",
        "held_out": {"images": int(len(labels)), "fp32_top1": float(np.mean(fp32 == labels)), "models": rows},
        "latency_ms_median": {str(b): v for b, v in latency.items()},
        "settings": vars(args),
    }
    print(f"\nCPU: {describe_features(features)}; {len(labels)} held-out digits, FP32 top-1 "
          f"{100 * result['held_out']['fp32_top1']:.2f}%")
    print(f"{'cpu target':<28}{'math':>8}{'this CPU':>10}{'differ':>8}{'x64qp':>8}"
          + "".join(f"{f'b{b} ms':>9}{f'b{b} x64qp':>11}" for b in BATCHES))
    for name, row in rows.items():
        cells = "".join(f"{latency[b][name]:>9.2f}{latency[b][name + ' + x64quantprecision']:>11.2f}" for b in BATCHES)
        print(f"{name:<28}{100 * row['top1_math']:>7.2f}%{100 * row['top1_this_cpu']:>9.2f}%"
              f"{row['this_cpu_answers_differ_from_math']:>8}{100 * row['top1_x64quantprecision']:>7.2f}%{cells}")
    print("FP32 latency: " + ", ".join(f"b{b} {latency[b]['FP32']:.2f} ms" for b in BATCHES))
    write_json(out, result)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
