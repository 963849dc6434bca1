"""Judge INT8 candidates against the FP32 model on held-out images, the way the parity harness judges them.

The held-out images are decoded once and the FP32 logits computed once; every candidate (a calibration
method, a model with one layer quantized, a model with some layers left in float) is then one
onnxruntime pass over the same batches. Ranking follows ``parity``: with labels, the top-1 accuracy drop
first, then top-1 agreement with FP32; without labels, agreement first, then the worst sample's cosine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import QuantizationError
from ..graph.compare import compare_outputs
from ..graph.session import make_session
from ..data.sources import Dataset


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


def score(ref: Reference, logits: np.ndarray) -> dict:
    """Parity figures of ``logits`` against FP32: agreement, cosines and (with labels) the top-1 drop in points."""
    p = compare_outputs(ref.logits, logits)
    result = {"top1_agreement": p.top1_agreement, "cosine": p.cosine, "min_cosine": p.min_cosine,
              "top1": None, "top1_drop": None}
    if not np.all(np.isfinite(logits)):  # NaN or inf: worse than any finite model
        result.update(top1_agreement=0.0, cosine=-1.0, min_cosine=-1.0)
    if ref.labeled:
        fp32 = float(np.mean(ref.logits.argmax(1) == ref.labels))
        result["top1"] = float(np.mean(logits.argmax(1) == ref.labels))
        result["top1_drop"] = 100.0 * (fp32 - result["top1"])
    return result


def rank_key(figures: dict) -> tuple:
    """Sort key, best first: (top-1 drop,) agreement, worst-sample cosine (mean cosine breaks exact ties)."""
    key = (-figures["top1_agreement"], -figures["min_cosine"], -figures["cosine"])
    return (figures["top1_drop"],) + key if figures["top1_drop"] is not None else key


@dataclass(frozen=True)
class Budget:
    """An INT8 accuracy budget with ``parity``'s meaning: the top-1 drop where labels exist, else agreement."""

    max_top1_drop: float | None = None  # percentage points
    min_agreement: float | None = None  # fraction 0..1

    def __post_init__(self):
        if self.max_top1_drop is not None and not self.max_top1_drop >= 0:
            raise QuantizationError(f"--max-top1-drop must be >= 0 points, got {self.max_top1_drop}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise QuantizationError(f"--min-agreement must be a fraction in [0, 1], got {self.min_agreement}")

    @property
    def given(self) -> bool:
        return self.max_top1_drop is not None or self.min_agreement is not None

    def check(self, labeled: bool) -> str:
        """Which figure the budget judges on data with/without labels; raises if it cannot judge at all."""
        if self.max_top1_drop is not None and labeled:
            return "top1_drop"
        if self.min_agreement is not None:
            return "top1_agreement"
        raise QuantizationError("--max-top1-drop needs labeled held-out images (an ImageFolder or a `path label` "
                                "list); give --min-agreement to judge by agreement instead")

    def holds(self, figures: dict, labeled: bool) -> bool:
        if self.check(labeled) == "top1_drop":
            return figures["top1_drop"] <= self.max_top1_drop + 1e-9
        return figures["top1_agreement"] >= self.min_agreement - 1e-9

    def describe(self, labeled: bool) -> str:
        if self.check(labeled) == "top1_drop":
            return f"top-1 drop <= {self.max_top1_drop:g} points"
        return f"top-1 agreement >= {self.min_agreement:g}"

    def as_dict(self) -> dict:
        return {"max_top1_drop": self.max_top1_drop, "min_agreement": self.min_agreement}


def describe_figures(figures: dict) -> str:
    drop = f"top-1 drop {figures['top1_drop']:.2f} points, " if figures["top1_drop"] is not None else ""
    return f"{drop}agreement {100 * figures['top1_agreement']:.2f}%, worst cosine {figures['min_cosine']:.4f}"
