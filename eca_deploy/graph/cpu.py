"""The CPU's INT8 features, and whether an INT8 ONNX's weights are safe on a CPU that lacks VNNI.

x86 CPUs without VNNI (AVX2-only AMD Zen 1-3, Intel before Ice Lake / Alder Lake) run onnxruntime's and
OpenVINO's u8 x s8 INT8 kernels with vpmaddubsw, which adds each pair of u8 x s8 products in int16 and
saturates (oneDNN's "Nuances of int8 computations"); VNNI and AMX sum into int32 exactly. With weights in
[-64, 64] no pair can saturate: 2 x 255 x 64 = 32640 <= 32767 (onnxruntime's ``reduce_range``, and the bound
its own session.x64quantprecision transformer uses to leave a weight alone).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# /proc/cpuinfo flags behind the x86 INT8 paths
CPU_FEATURES = {"vnni": ("avx512_vnni", "avx_vnni", "amx_int8"), "amx": ("amx_int8",), "avx512": ("avx512f",),
                "avx2": ("avx2",)}
FEATURE_NAMES = {"avx2": "AVX2", "avx512": "AVX-512", "vnni": "VNNI", "amx": "AMX"}
INT16_MAX = 2**15 - 1
SAFE_WEIGHT_MAX = INT16_MAX // (2 * 255)  # 64: the largest |weight| whose pairwise u8 x s8 sums fit in int16


def cpu_features(cpuinfo: str) -> dict:
    """{"vnni", "amx", "avx512", "avx2"} -> bool from /proc/cpuinfo text; all None where the text has no
    flags line (an ARM CPU, no /proc): nothing to say about x86 INT8 there."""
    line = next((line for line in cpuinfo.splitlines() if re.match(r"flags\s*:", line)), None)
    if line is None:
        return {name: None for name in CPU_FEATURES}
    flags = set(line.split(":", 1)[1].split())
    return {name: any(f in flags for f in wanted) for name, wanted in CPU_FEATURES.items()}


def this_cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    try:
        return cpu_features(Path(cpuinfo).read_text(errors="replace"))
    except OSError:
        return cpu_features("")


def describe_features(features: dict) -> str:
    """'AVX2, AVX-512, VNNI; no AMX' (doctor, the test header)."""
    if features.get("avx2") is None:
        return "no x86 vector flags in /proc/cpuinfo"
    have = [label for key, label in FEATURE_NAMES.items() if features.get(key)]
    lack = [label for key, label in FEATURE_NAMES.items() if not features.get(key)]
    return ", ".join(have or ["none of AVX2/AVX-512/VNNI/AMX"]) + (f"; no {', '.join(lack)}" if lack and have else "")


def lacks_vnni(features: dict) -> bool:
    """An x86 CPU whose u8 x s8 kernels saturate (unknown or not x86: False, nothing to warn about)."""
    return features.get("avx2") is not None and not features.get("vnni")


def int8_weight_max(model: onnx.ModelProto) -> int | None:
    """The largest |q| of the int8 weights the model dequantizes (None: no int8 weights)."""
    initializers = {i.name: i for i in model.graph.initializer}
    reach = None
    for node in model.graph.node:
        weight = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weight is not None and weight.data_type == TensorProto.INT8:
            q = numpy_helper.to_array(weight)
            reach = max(reach or 0, int(np.max(np.abs(q.astype(np.int16)))) if q.size else 0)
    return reach


def weight_bits(model: onnx.ModelProto) -> int | None:
    """7 where every int8 weight fits [-64, 64] (safe without VNNI), 8 where some do not, None: no int8 weights."""
    reach = int8_weight_max(model)
    return None if reach is None else (7 if reach <= SAFE_WEIGHT_MAX else 8)


def saturation_warning(model: onnx.ModelProto, features: dict, runtime: str, label: str) -> str | None:
    """A one-line warning where ``runtime`` (onnxruntime or OpenVINO on this CPU) runs ``model``'s 8-bit
    weights on a u8 x s8 path that saturates here; None where it cannot."""
    if not lacks_vnni(features) or weight_bits(model) != 8:
        return None
    return (f"{label} has 8-bit INT8 weights and this CPU has no VNNI: {runtime}'s u8s8 kernels saturate in int16 "
            f"here, so its results on this CPU are not the model's math; for x86 CPUs without VNNI quantize with "
            f"--target cpu and without --cpu-vnni (7-bit weights)")
