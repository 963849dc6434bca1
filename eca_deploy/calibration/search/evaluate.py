"""Judge INT8 candidates against the FP32 model on held-out images with parity's verdict (graph.compare.judge).

The held-out images are decoded once and the FP32 logits computed once; every candidate (a calibration
method, a model with one layer quantized, a model with some layers left in float) is then one
onnxruntime pass over the same batches. Candidates rank by closeness to FP32: fewest flipped answers,
then the worst sample's cosine, then the mean cosine (a signed accuracy difference would reward a model
whose wrong-to-right flips outnumber its right-to-wrong ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import onnx

from ...artifacts import package_versions
from ...data.sources import Dataset
from ...errors import QuantizationError
from ...graph.compare import compare_outputs, count_flips, judge, tolerance_for
from ...graph.cpu import lacks_vnni, this_cpu_features, weight_bits
from ...graph.session import has_fp16_qdq, make_session
from ...precisions import Tolerance
from ..int8.calibrators import METHODS


@dataclass
class Reference:
    """Held-out batches with the FP32 model's logits on them."""

    batches: list[np.ndarray]
    logits: np.ndarray
    labels: np.ndarray | None
    description: str  # what the images are, for the manifest and the printout
    held_out: bool  # False: no image outside the calibration set was available

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    @property
    def images(self) -> int:
        return len(self.logits)


def reference_run(model: onnx.ModelProto, data: Dataset, batch_size: int, what: str, held_out: bool,
                  use_labels: bool = True) -> Reference:
    """Decode ``data`` once and run FP32 on it; ``what`` says what the images are ("held-out images from X")."""
    batches, labels = [], []
    # "check images": held out or not, the description (``what``) says which; the progress line never does
    for batch, batch_labels in data.batches(batch_size, desc="check images"):
        batches.append(batch)
        if batch_labels is not None and use_labels:
            labels.append(batch_labels)
    ref = Reference(batches, np.empty(0), np.concatenate(labels) if labels else None, "", held_out)
    ref.logits = run_model(model, ref, label="the input model", math=False)  # FP32: no integer kernels to differ
    ref.description = f"{ref.images} {what}"
    return ref


def run_model(model: onnx.ModelProto, ref: Reference, label: str = "the quantized model",
              math: bool = True) -> np.ndarray:
    """Logits on the held-out batches. ``math``: Q/DQ unfused, the ONNX semantics (every choice is
    made on these, the same on every CPU); else this CPU's default onnxruntime session (graph/session.py)."""
    session = make_session(model, label=label, optimized=not math)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: batch})[0] for batch in ref.batches])


def score(ref: Reference, logits: np.ndarray, tol: Tolerance | None = None) -> dict:
    """Figures of ``logits`` against FP32: flips, agreement, cosines, with labels the top-1 drop counted from
    right-to-wrong flips (points); with ``tol`` also parity's verdict on them (passed, failures)."""
    p = compare_outputs(ref.logits, logits)
    counts = count_flips(logits, ref.logits, ref.labels)
    result = {"flips": counts["flips"], "top1_agreement": p.top1_agreement, "cosine": p.cosine,
              "min_cosine": p.min_cosine, "top1": None, "top1_drop": None,
              "right_to_wrong": counts["right_to_wrong"], "wrong_to_right": counts["wrong_to_right"]}
    if not np.all(np.isfinite(logits)):  # NaN or inf: worse than any finite model
        result.update(flips=ref.images, top1_agreement=0.0, cosine=-1.0, min_cosine=-1.0)
    if ref.labeled:
        result["top1"] = float(np.mean(logits.argmax(1) == ref.labels))
        result["top1_drop"] = 100.0 * counts["right_to_wrong"] / max(ref.images, 1)
    if tol is not None:
        verdict, _ = judge(tol, logits, ref.logits, ref.labels)
        result.update(passed=verdict.passed, failures=verdict.failures)
    return result


def rank_key(figures: dict) -> tuple:
    """Sort key, closest to FP32 first: fewest flips (highest agreement), worst-sample cosine, mean cosine."""
    return (-figures["top1_agreement"], -figures["min_cosine"], -figures["cosine"])


def flip_noise(a: int, b: int) -> float:
    """The largest difference between two flip counts on the same images that is still noise: two standard
    deviations of a difference of two counts (Poisson: sqrt(a + b)), and never under two images."""
    return max(2.0, 2.0 * math.sqrt(a + b))


def check_budget(max_top1_drop: float | None = None, min_agreement: float | None = None,
                 labeled: bool | None = None) -> None:
    """Refuse a budget out of range, or (``labeled`` known) one that cannot be judged on those images."""
    if max_top1_drop is not None and not max_top1_drop >= 0:
        raise QuantizationError(f"--max-top1-drop must be >= 0 points, got {max_top1_drop}")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise QuantizationError(f"--min-agreement must be a fraction in [0, 1], got {min_agreement}")
    if max_top1_drop is not None and labeled is False:
        raise QuantizationError("--max-top1-drop needs labeled held-out images (an ImageFolder or a `path label` "
                                "list); give --min-agreement to judge by agreement instead")


def budget_tolerance(precision: str, overrides: dict | None = None, max_top1_drop: float | None = None,
                     min_agreement: float | None = None) -> Tolerance:
    """The verdict quantize applies: parity's for ``precision``, with the same defaults and overrides, and the
    user's --max-top1-drop / --min-agreement (both apply where both are given)."""
    check_budget(max_top1_drop, min_agreement)
    given = {name: value for name, value in (("max_top1_drop", max_top1_drop), ("min_agreement", min_agreement))
             if value is not None}
    return replace(tolerance_for(precision, overrides), **given)


def describe_budget(tolerance: Tolerance, labeled: bool) -> str:
    parts = []
    if tolerance.min_agreement is not None:
        parts.append(f"top-1 agreement >= {tolerance.min_agreement:g}")
    if tolerance.max_top1_drop is not None and labeled:
        parts.append(f"top-1 drop <= {tolerance.max_top1_drop:g} points from right-to-wrong flips")
    return " and ".join(parts) or "no INT8 accuracy check"


def budget_record(tolerance: Tolerance) -> dict:
    return {"max_top1_drop": tolerance.max_top1_drop, "min_agreement": tolerance.min_agreement}


def describe_figures(figures: dict) -> str:
    drop = f"top-1 drop {figures['top1_drop']:.2f} points, " if figures["top1_drop"] is not None else ""
    return (f"{drop}agreement {100 * figures['top1_agreement']:.2f}% ({figures['flips']} flips), "
            f"worst cosine {figures['min_cosine']:.4f}")


JUDGED_ON = ("the model's math: onnxruntime without its Q/DQ fusion (session.disable_quant_qdq: Q/DQ computed in "
             "float, as ONNX defines them)")


def runtime_check(model: onnx.ModelProto, logits: np.ndarray, ref: Reference) -> dict:
    """The chosen model (``logits``: its math) in this CPU's default onnxruntime session, beside its math: where fused integer
    kernels answer differently (u8s8 saturation on x86 CPUs without VNNI), say so; it never decides anything."""
    features = this_cpu_features()
    # An FP16-glue model runs node by node in every session (graph/session.py): its math is this CPU's result,
    # so a second run of it, the slowest kind of run there is, would only repeat the first. It runs in float, so
    # it cannot saturate either (as device.int8_cpu_warning says).
    fp16_glue = has_fp16_qdq(model)
    session = logits if fp16_glue else run_model(model, ref, label="the quantized model", math=False)
    differ = int(np.sum(session.argmax(1) != logits.argmax(1)))
    saturates = not fp16_glue and lacks_vnni(features) and weight_bits(model) == 8
    return {"cpu": features, "figures": score(ref, session), "answers_differ": differ, "saturates": saturates,
            "onnxruntime": package_versions("onnxruntime")["onnxruntime"]}


def describe_runtime(runtime: dict, images: int) -> str | None:
    """"this CPU's onnxruntime saturates: ..." where its default session differs from the math, else None."""
    if not runtime["answers_differ"]:
        return None
    what, why = (("saturates", " (8-bit weights, no VNNI)") if runtime["saturates"]
                 else ("differs from the model's math", ""))
    return (f"this CPU's onnxruntime {what}: {runtime['answers_differ']} of {images} answers differ{why}, "
            f"{describe_figures(runtime['figures'])}")


def select_method(candidates: dict, images: int) -> tuple[str, dict]:
    """The method whose candidate (``.figures``) is closest to FP32 (rank_key), with the table, a one-line reason, and whether the runner-up's
    flips are within noise of the winner's on these ``images`` (then the choice is not resolved by them)."""
    order = sorted(candidates, key=lambda m: rank_key(candidates[m].figures))  # stable: METHODS order on ties
    best, runner = order[0], order[1] if len(order) > 1 else None
    table = [{"method": m, **candidates[m].figures} for m in candidates]
    if runner is None:
        return best, {"chosen": best, "candidates": table, "reason": "the only method", "within_noise": False}
    a, b = candidates[best].figures, candidates[runner].figures
    fields = ["flips", "min_cosine", "cosine"]
    names = {"flips": ("fewer flipped answers", "{:d}"), "min_cosine": ("higher worst-sample cosine", "{:.6f}"),
             "cosine": ("higher mean cosine", "{:.6f}")}
    decided = next((f for f in fields if a[f] != b[f]), None)
    if decided is None:
        reason = f"{best} and {runner} tie on every figure; {best} comes first in {', '.join(METHODS)}"
    else:
        tied = fields[:fields.index(decided)]
        prefix = f"ties with {runner} on {', '.join(tied)}; " if tied else ""
        name, fmt = names[decided]
        reason = f"{prefix}{name} than {runner}: {fmt.format(a[decided])} vs {fmt.format(b[decided])}"
    noise = flip_noise(a["flips"], b["flips"])
    within = b["flips"] - a["flips"] <= noise
    if within:
        reason += (f"; within noise: {a['flips']} vs {b['flips']} flips on {images} images (a difference of up "
                   f"to {noise:.3g} images is not resolved), so {runner} would serve as well")
    return best, {"chosen": best, "candidates": table, "reason": reason, "within_noise": within,
                  "noise_flips": noise}
