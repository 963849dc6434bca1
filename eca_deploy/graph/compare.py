"""Comparators: numbers that say how close a candidate's logits are to a reference's.

Kept apart from the runners that produce the logits (Polygraphy's split).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class OutputComparison:
    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float  # mean over samples of the per-sample cosine similarity
    min_cosine: float
    top1_agreement: float  # fraction of samples whose argmax matches the reference's
    top5_overlap: float  # mean |top5(ref) & top5(cand)| / 5
    samples: int

    def as_dict(self) -> dict:
        return asdict(self)


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[1])
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def _abs_rel(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise |cand - ref| and |cand - ref| / |ref|, the reference's zeros lifted to float32's tiny.
    NaN/Inf outputs are judged by the callers; numpy's warnings about them would only clutter the screen."""
    with np.errstate(all="ignore"):
        diff = np.abs(ref - cand)
        return diff, diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class ElementCheck:
    """Polygraphy's ``elemwise`` check: an element fails only when it exceeds BOTH atol and rtol."""

    atol: float
    rtol: float
    mismatched: int  # elements over both tolerances (NaN counts as over)
    elements: int
    required_rtol: float  # largest rel error among elements over atol: the smallest rtol that passes at this atol

    @property
    def passed(self) -> bool:
        return self.mismatched == 0

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def check_elements(reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float) -> ElementCheck:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {cand.shape}")
    diff, rel = _abs_rel(ref, cand)
    over_abs = (diff > atol) | np.isnan(diff)
    over_rel = (rel > rtol) | np.isnan(rel)
    required = float(np.max(rel[over_abs], initial=0.0))
    if np.isnan(required):  # a NaN output passes at no rtol
        required = float("inf")
    return ElementCheck(atol=float(atol), rtol=float(rtol), mismatched=int(np.count_nonzero(over_abs & over_rel)),
                        elements=int(diff.size), required_rtol=required)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the k highest logits."""
    logits = np.asarray(logits).reshape(len(logits), -1)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(logits):
        raise ValueError(f"{len(labels)} labels for {len(logits)} samples")
    if not len(labels):
        return 0.0
    return float(np.mean(np.any(_topk(logits, k) == labels[:, None], axis=1)))


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> OutputComparison:
    """Compare [N, classes] logits sample by sample."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {cand.shape}")
    diff, rel = _abs_rel(ref, cand)
    with np.errstate(all="ignore"):
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
        cos = np.where(norms > 0, np.sum(ref * cand, axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
    k = min(5, ref.shape[1])
    top_r, top_c = _topk(ref, k), _topk(cand, k)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_r, top_c)]
    return OutputComparison(
        max_abs=float(diff.max(initial=0.0)),
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        max_rel=float(rel.max(initial=0.0)),
        cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
        top1_agreement=float(np.mean(top_r[:, 0] == top_c[:, 0])),
        top5_overlap=float(np.mean(overlap)),
        samples=int(ref.shape[0]),
    )
