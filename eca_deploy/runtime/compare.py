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


def compare_outputs(reference: np.ndarray, candidate: np.ndarray) -> OutputComparison:
    """Compare [N, classes] logits sample by sample."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {cand.shape}")
    diff = np.abs(ref - cand)
    rel = diff / np.maximum(np.abs(ref), np.finfo(np.float32).tiny)
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
