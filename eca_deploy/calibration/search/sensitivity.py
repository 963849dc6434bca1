"""Per-layer sensitivity: what quantizing one Q/DQ group alone costs, measured at the network's output.

For each group (one quantized activation plus the weights of the layers reading it, as the target places
them) the model is run on the held-out images with only that group quantized and everything else in
float; sensitivity is 1 - the mean cosine between its logits and FP32's. That is one onnxruntime pass
per group over images already decoded, with FP32's logits computed once. Cheaper measures exist but
are not the output's: a layer's own quantization noise (SQNR) ignores how much of it later layers
amplify or wash out, and running only the network's suffix from cached activations saves at most half
of each pass while holding every live activation of every held-out image in memory.
"""

from __future__ import annotations

import io
from pathlib import Path

import onnx

from ...artifacts import atomic_write
from ...progress import progress
from ..int8.calibrators import TensorRange
from .evaluate import Reference, run_model, score
from ..qdq.placement import QdqGroup, QdqPlan
from ..qdq.rewrite import insert_qdq

MEASURE = "1 - mean cosine of the logits vs FP32 with only this group quantized (others in float)"


def measure_sensitivity(model: onnx.ModelProto, plan: QdqPlan, groups: list[QdqGroup],
                        ranges: dict[str, TensorRange], ref: Reference) -> list[dict]:
    """One row per group, most sensitive first (ties keep network order)."""
    rows = []
    for group in progress(groups, desc="sensitivity", unit="layers"):  # one pass over the held-out images each
        alone, _ = insert_qdq(model, plan.only([group]), ranges)
        figures = score(ref, run_model(alone, ref))
        rows.append({"tensor": group.tensor, "position": group.position, "nodes": list(group.nodes),
                     "weights": list(group.weights), "sensitivity": 1.0 - figures["cosine"], **figures})
    rows.sort(key=lambda r: -r["sensitivity"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def write_plot(path: Path, rows: list[dict], floated: set[str], title: str) -> Path:
    """Bar chart of sensitivity per group in network order (log scale), groups left in float in red."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    ordered = sorted(rows, key=lambda r: r["position"])
    values = [max(r["sensitivity"], 1e-9) for r in ordered]  # log axis: an exact zero shows at the floor
    colors = ["tab:red" if r["tensor"] in floated else "tab:blue" for r in ordered]
    width = max(6.0, 0.22 * len(ordered) + 2)
    fig, ax = plt.subplots(figsize=(width, 4.5))
    ax.bar(range(len(ordered)), values, color=colors)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ordered)))
    ax.set_xticklabels([_short(r["tensor"]) for r in ordered], rotation=90, fontsize=6)
    ax.set_ylabel("1 - mean cosine vs FP32")
    ax.set_xlabel("quantized tensor (this Q/DQ group alone in INT8), network order"
                  + ("; red: left in float" if floated else ""))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())


def _short(tensor: str) -> str:
    """'/layer1/layer1.0/eca/sigmoid/Sigmoid_output_0' -> 'layer1.0/eca/sigmoid/Sigmoid'."""
    parts = [p for p in tensor.replace("_output_0", "").split("/") if p]
    parts = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    return "/".join(parts[-4:]) or tensor
