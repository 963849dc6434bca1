"""Meet an accuracy budget by leaving the most sensitive Q/DQ groups in float, fewest first.

Groups are taken in sensitivity order (one alone, then the two most sensitive, ...) and each mixed model
is judged on the held-out images; the first that meets the budget wins. That is a greedy order, not a
search over every subset: it finds the fewest layers when the layers' costs roughly add up, which the
per-layer measure assumes anyway. float is the higher precision on both targets: onnxruntime runs a
layer without Q/DQ in FP32; TensorRT, strongly typed, runs it in the model's float type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ...errors import ParityError
from ...progress import progress
from ..int8.calibrators import TensorRange
from ...precisions import Tolerance
from .evaluate import Reference, describe_budget, describe_figures, run_model, score
from ..qdq.placement import QdqGroup, QdqPlan
from ..qdq.rewrite import QdqSummary, insert_qdq


@dataclass
class FallbackResult:
    model: onnx.ModelProto
    summary: QdqSummary
    logits: np.ndarray
    floated: list[dict]  # the groups left in float, each with why
    steps: list[dict]  # one row per mixed model tried: how many in float, its figures, whether it held


def keep_in_float(model: onnx.ModelProto, plan: QdqPlan, groups: list[QdqGroup], ranking: list[dict],
                  ranges: dict[str, TensorRange], ref: Reference, tolerance: Tolerance, start: dict,
                  max_float_layers: int | None) -> FallbackResult | None:
    """None when the fully quantized model (``start``: its figures, judged by the budget ``tolerance``) already
    holds the budget."""
    budget = describe_budget(tolerance, ref.labeled)
    steps = [{"float_layers": 0, **start, "holds": start["passed"]}]
    if steps[0]["holds"]:
        return None
    by_tensor = {g.tensor: g for g in groups}
    limit = len(ranking) if max_float_layers is None else min(max_float_layers, len(ranking))
    bar = progress(total=limit, desc=f"float layers until {budget}", unit="steps")
    for k in range(1, limit + 1):
        bar.update(1)
        chosen = [by_tensor[r["tensor"]] for r in ranking[:k]]
        mixed, summary = insert_qdq(model, plan.without(chosen), ranges)
        logits = run_model(mixed, ref)
        figures = score(ref, logits, tolerance)
        holds = figures["passed"]
        steps.append({"float_layers": k, "added": ranking[k - 1]["tensor"], **figures, "holds": holds})
        if holds:
            bar.close()
            why = (f"needed to meet {budget} on {ref.description}: fully INT8 gave "
                   f"{describe_figures(start)}; with the {k} most sensitive in float, {describe_figures(figures)}")
            floated = [{"tensor": r["tensor"], "nodes": r["nodes"], "rank": r["rank"],
                        "sensitivity": r["sensitivity"],
                        "reason": f"sensitivity rank {r['rank']} of {len(ranking)} "
                                  f"({r['sensitivity']:.3g} alone); {why}"} for r in ranking[:k]]
            return FallbackResult(mixed, summary, logits, floated, steps)
    bar.close()
    last = steps[-1]
    raise ParityError(f"{budget} not met even with the {limit} most sensitive of "
                      f"{len(ranking)} quantized layers in float ({describe_figures(last)} on {ref.description}); "
                      "nothing written: loosen the budget, raise --max-float-layers, or use FP16")
