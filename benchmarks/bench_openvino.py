"""onnxruntime vs OpenVINO on the CPU, side by side, and what each does with the ECA gate (issue 13).

    python benchmarks/bench_openvino.py      # prints the tables, writes runs/benchmarks/openvino.json
    python benchmarks/bench_openvino.py --update-results  # into benchmarks/results/, what docs/performance.md quotes

1. eca_resnet50 and resnet50 at 224 exported (dynamic batch), and their INT8 models (`quantize
   --target cpu`, Q/DQ) calibrated on --calib-count crops of the two photos scikit-learn ships.
2. Every model x precision x runtime (onnxruntime's CPU provider; OpenVINO's CPU plugin with the
   precision set from the artifact, latency hint) at batch 1 and 8 through the harness's backends,
   --threads each; interleaved round by round, one session alive at a time (interleave.side_by_side),
   medians over rounds of each turn's p50.
3. ECA overhead = eca_resnet50 / resnet50, per runtime, precision and batch; plus an experiment,
   "eca_resnet50 pooled early" (FP32): each gate computed from conv3's input instead of its output.
   conv3 is a 1x1 convolution (BN folded) with nothing between it and the pooling, so
   mean(W y + b) = W mean(y) + b: the same gate, pooled over C/4 channels instead of C, and known
   before conv3 runs (which a runtime could use to apply it as conv3's post-op).
4. Layout: OpenVINO's execution graph (compiled_model.get_runtime_model()): layer types, Reorders on
   full feature maps, the layout and precision of each gating Multiply and what it was fused with,
   where each residual Add went, and the share of time (PERF_COUNT) in the ECA nodes; onnxruntime's
   optimized graph (optimized_model_filepath): NCHWc reorders and the Mul / Add nodes left standing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from bench_quantize import make_images
from interleave import side_by_side
from output import add_output_args, out_path

MODELS = ("resnet50", "eca_resnet50")
RUNTIMES = ("onnxruntime", "openvino")


def build_models(work: Path, imgsz: int, calib_count: int) -> dict[tuple[str, str], Path]:
    """{(model, precision): ONNX path} for fp32 and int8 (cpu target)."""
    from eca_deploy.calibration.quantize import QuantizeConfig, quantize
    from eca_deploy.export.onnx_export import ExportConfig, export_model

    images = make_images(work / "calib", calib_count, seed=0)
    paths = {}
    for model in MODELS:
        onnx_path = export_model(ExportConfig(model=model, out_dir=str(work / model), imgsz=imgsz)).onnx_path
        paths[(model, "fp32")] = onnx_path
        paths[(model, "int8")] = quantize(QuantizeConfig(onnx=str(onnx_path), precision="int8", target="cpu",
                                                         calib_data=str(images), calib_count=calib_count,
                                                         check_count=8)).path
        print(f"built {model}: {onnx_path.name}, {paths[(model, 'int8')].name}", flush=True)
    paths[("eca_resnet50 pooled early", "fp32")] = pool_early(paths[("eca_resnet50", "fp32")], work, imgsz)
    return paths


def pool_early(path: Path, work: Path, imgsz: int) -> Path:
    """Each ECA GlobalAveragePool moved in front of the 1x1 conv3 that feeds it (plus that conv on the pooled
    [N, C/4, 1, 1] tensor); checked against the original on onnxruntime."""
    import onnx
    from onnx import helper

    from eca_deploy.graph.session import run_once

    model = onnx.load(str(path))
    producers = {out: node for node in model.graph.node for out in node.output}
    nodes = []
    for node in model.graph.node:
        conv = producers.get(node.input[0]) if node.op_type == "GlobalAveragePool" and "/eca/" in node.name else None
        if conv is None:
            nodes.append(node)
            continue
        kernel = [list(a.ints) for a in conv.attribute if a.name == "kernel_shape"]
        assert conv.op_type == "Conv" and kernel == [[1, 1]], f"{node.name} does not pool a 1x1 convolution"
        pooled = node.output[0] + "_early"
        nodes += [helper.make_node("GlobalAveragePool", [conv.input[0]], [pooled], name=node.name + "_early"),
                  helper.make_node("Conv", [pooled, *conv.input[1:]], [node.output[0]], name=conv.name + "_pooled",
                                   kernel_shape=[1, 1])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    out = work / "eca_resnet50.pooled_early.onnx"
    onnx.save(model, str(out))
    x = np.random.default_rng(1).standard_normal((2, 3, imgsz, imgsz), dtype=np.float32)
    gap = float(np.abs(run_once(out, x) - run_once(path, x)).max())
    assert gap < 1e-4, f"pooled-early graph differs by {gap}"
    return out


def _rt(op, key: str) -> str:
    info = op.get_rt_info()
    return info[key].astype(str) if key in info else ""


def _full_map(op) -> bool:
    shape = op.get_output_partial_shape(0)
    return shape.rank.is_static and len(shape) == 4 and shape[2].is_static and shape[2].get_length() > 1


def _kind(name: str) -> str:
    """'/layer1/layer1.1/relu_2/Relu' -> 'Relu'; '/layer1/layer1.1/eca/Mul' -> 'Mul'."""
    return name.rsplit("/", 1)[-1].split("_")[0]


def openvino_layout(path: Path, precision: str, threads: int, imgsz: int) -> dict:
    """What OpenVINO's CPU plugin made of the graph, with per-node times after a few batch-1 runs."""
    import openvino as ov

    from eca_deploy.graph.openvino_session import DEVICE, inference_precision

    core = ov.Core()
    model = core.read_model(str(path))
    compiled = core.compile_model(model, DEVICE, {"INFERENCE_PRECISION_HINT": inference_precision(precision, core,
                                                                                                   model),
                                                  "INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((1, 3, imgsz, imgsz), dtype=np.float32)
    for _ in range(5):
        request.infer(x)
    ops = compiled.get_runtime_model().get_ordered_ops()
    names = {op.get_friendly_name(): _rt(op, "originalLayersNames").split(",") for op in ops}
    gates = [op for op in ops if any(n.endswith("/eca/Mul") for n in names[op.get_friendly_name()])]
    adds = Counter(_rt(op, "layerType") for op in ops if any(_kind(n) == "Add" for n in names[op.get_friendly_name()]))
    times = {op.get_friendly_name(): float(_rt(op, "execTimeMcs") or 0) for op in ops
             if _rt(op, "execTimeMcs").replace(".", "", 1).isdigit()}
    eca = sum(t for name, t in times.items()
              if "/eca/" in name or any("/eca/" in n for n in names[name]))
    total = sum(times.values())
    by_type = Counter()
    for op in ops:
        name = op.get_friendly_name()
        if name in times and ("/eca/" in name or any("/eca/" in n for n in names[name])):
            by_type[_rt(op, "layerType")] += times[name] / total
    return {
        "layer_types": dict(Counter(_rt(op, "layerType") for op in ops).most_common()),
        "full_map_reorders": sum(1 for op in ops if _rt(op, "layerType") == "Reorder" and _full_map(op)),
        "small_reorders": sum(1 for op in ops if _rt(op, "layerType") == "Reorder" and not _full_map(op)),
        "feature_map_layouts": dict(Counter(_rt(op, "outputLayouts") for op in ops
                                            if _full_map(op) and _rt(op, "layerType") != "Const")),
        "gating_multiplies": dict(Counter(
            f"{_rt(op, 'layerType')} [{'+'.join(_kind(n) for n in names[op.get_friendly_name()])}] "
            f"layout {_rt(op, 'outputLayouts')} {_rt(op, 'runtimePrecision')}" for op in gates)),
        "residual_adds_fused_into": dict(adds),
        "eca_time_share_batch1": eca / total if total else None,
        "eca_time_share_by_layer_type": {k: round(v, 4) for k, v in by_type.most_common()},
    }


def onnxruntime_layout(path: Path, threads: int, work: Path) -> dict:
    """Node counts of onnxruntime's fully optimized CPU graph."""
    import onnx
    import onnxruntime as ort

    optimized = work / f"{path.stem}.ort-optimized.onnx"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)
    return {key: ops.get(key, 0) for key in ("ReorderInput", "ReorderOutput", "Mul", "Add", "Relu", "Conv",
                                             "QLinearConv", "QLinearMul", "QLinearAdd", "DequantizeLinear")}


def factories(paths: dict, threads: int) -> dict:
    from eca_deploy.runtime.registry import open_backend

    made = {}
    for (model, precision), path in paths.items():
        made[f"{model} {precision} onnxruntime"] = (
            lambda p=path: open_backend(str(p), provider="cpu", threads=threads))
        made[f"{model} {precision} openvino"] = lambda p=path: open_backend(f"openvino:{p}", threads=threads)
    return made


def latency_keys(latency: dict) -> list[tuple[str, str]]:
    """(model, precision) pairs in the order measured: 'eca_resnet50 pooled early fp32 openvino' -> its pair."""
    return list(dict.fromkeys(tuple(name.rsplit(" ", 2)[:2]) for name in latency))


def print_tables(latency: dict, batches: tuple[int, ...]) -> dict:
    def ms(model: str, precision: str, runtime: str, batch: int) -> float:
        return latency[f"{model} {precision} {runtime}"][str(batch)]["p50_ms"]

    print("\n| model | precision | batch | onnxruntime ms | OpenVINO ms | OpenVINO speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for model, precision in latency_keys(latency):
        for b in batches:
            ort_ms, ov_ms = (ms(model, precision, rt, b) for rt in RUNTIMES)
            print(f"| {model} | {precision} | {b} | {ort_ms:.1f} | {ov_ms:.1f} | {ort_ms / ov_ms:.2f}x |")
    overhead = {}
    print("\n| ECA overhead (vs resnet50, same runtime and precision) | onnxruntime | OpenVINO |")
    print("|---|---:|---:|")
    for model, precision in latency_keys(latency):
        for b in batches:
            if model == "resnet50":
                continue
            ratios = {rt: ms(model, precision, rt, b) / ms("resnet50", precision, rt, b) for rt in RUNTIMES}
            overhead[f"{model} {precision} b{b}"] = ratios
            print(f"| {model} {precision}, batch {b} | {ratios['onnxruntime']:.3f} | {ratios['openvino']:.3f} |")
    return overhead


def main() -> int:
    from eca_deploy.artifacts import package_versions, write_json
    from eca_deploy.runtime.harness.device import describe_device

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--iterations", type=int, default=8, help="timed calls per backend, batch and round")
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes")
    parser.add_argument("--calib-count", type=int, default=32, help="calibration images for INT8")
    parser.add_argument("--imgsz", type=int, default=224)
    add_output_args(parser, "openvino.json")
    args = parser.parse_args()
    args.out = out_path(args, "openvino.json")
    batches = (1, 8)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = build_models(work, args.imgsz, args.calib_count)
        layout = {f"{model} {precision}": {
            "openvino": openvino_layout(path, precision, args.threads, args.imgsz),
            "onnxruntime": onnxruntime_layout(path, args.threads, work)} for (model, precision), path in paths.items()}
        latency = side_by_side(factories(paths, args.threads), batches, args.rounds, args.iterations, args.imgsz)

    overhead = print_tables(latency, batches)
    print("\nlayout (batch-1 execution graphs):")
    for name, entry in layout.items():
        print(f"  {name}: OpenVINO {entry['openvino']}")
        print(f"  {name}: onnxruntime {entry['onnxruntime']}")
    result = {
        "machine": {**describe_device(args.threads)["cpu"], "load_average_at_end": os.getloadavg(),
                    "python": platform.python_version(),
                    "versions": package_versions("onnxruntime", "openvino", "torch")},
        "latency_p50_ms": latency, "eca_overhead": overhead, "layout": layout, "settings": vars(args),
    }
    write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
