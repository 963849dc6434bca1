"""Comparators: numbers that say how close a candidate's logits are to a reference's, and the verdict.

Kept apart from the runners that produce the logits (Polygraphy's split). The tolerances and ``judge``
live here, below both the precision stage and the parity harness, so "FP16 is faithful" means the same
thing when quantize decides whether to write an FP16 model and when parity checks it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..precisions import PRECISIONS, TF32_TOLERANCE, Tolerance


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
    """Polygraphy's ``elemwise`` check: an element fails only when it exceeds BOTH atol and rtol.

    ``atol`` is in units of each sample's logit scale (the RMS of the reference's logits, at least 1):
    float32's own rounding error grows with the size of what it rounds, so a faithful FP32 export of a
    model whose logits reach 170 differs by 2e-3 where a unit-scale model differs by 1e-5.
    """

    atol: float
    rtol: float
    mismatched: int  # elements over both tolerances (NaN counts as over)
    elements: int
    required_rtol: float  # largest rel error among elements over atol: the smallest rtol that passes at this atol
    max_scale: float  # the largest per-sample logit scale that multiplied atol

    @property
    def passed(self) -> bool:
        return self.mismatched == 0

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def logit_scale(reference: np.ndarray) -> np.ndarray:
    """Per sample: the RMS of its reference logits, at least 1 (so unit-scale models keep atol as given)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    rms = np.sqrt(np.mean(np.square(ref), axis=1)) if ref.size else np.ones(len(ref))
    return np.maximum(np.nan_to_num(rms, nan=1.0, posinf=1.0), 1.0)


def check_elements(reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float) -> ElementCheck:
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {cand.shape}")
    ref, cand = ref.reshape(len(ref) if ref.ndim else 1, -1), cand.reshape(len(cand) if cand.ndim else 1, -1)
    scale = logit_scale(ref)
    diff, rel = _abs_rel(ref, cand)
    over_abs = (diff > atol * scale[:, None]) | np.isnan(diff)
    over_rel = (rel > rtol) | np.isnan(rel)
    required = float(np.max(rel[over_abs], initial=0.0))
    if np.isnan(required):  # a NaN output passes at no rtol
        required = float("inf")
    return ElementCheck(atol=float(atol), rtol=float(rtol), mismatched=int(np.count_nonzero(over_abs & over_rel)),
                        elements=int(diff.size), required_rtol=required, max_scale=float(scale.max(initial=1.0)))


def tolerance_for(precision: str, overrides: dict[str, dict[str, float | None]] | None = None,
                  fp32_math: str = "fp32") -> Tolerance:
    """The default for ``precision`` (TF32's where the backend runs FP32 in TF32) with overrides applied:
    {'atol': {'*': 1e-3, 'fp16': None}, ...}; overrides are keyed by the artifact's precision."""
    tf32 = precision == "fp32" and fp32_math == "tf32"
    tol = TF32_TOLERANCE if tf32 else PRECISIONS[precision].tolerance
    for name, per_precision in (overrides or {}).items():
        for key in ("*", precision):  # a precision-specific value wins over one for all
            if key in per_precision:
                tol = replace(tol, **{name: per_precision[key]})
    return tol


def given_overrides(overrides: dict[str, dict[str, float | None]], precision: str,
                    names: tuple[str, ...]) -> dict[str, float | None]:
    """The values the user gave for ``precision`` (one for it over one for every precision), None where none:
    what a stage should meet beyond the defaults (quantize's INT8 budget is --max-top1-drop / --min-agreement)."""
    found = {}
    for name in names:
        given = overrides.get(name, {})
        found[name] = given[precision] if precision in given else given.get("*")
    return found


@dataclass
class Verdict:
    passed: bool
    checks: list[dict] = field(default_factory=list)  # {"check", "value", "limit", "passed"}

    @property
    def failures(self) -> list[str]:
        return [f"{c['check']}: {figure(c['value'])} (limit {figure(c['limit'])})" for c in self.checks
                if not c["passed"]]


def figure(value: float) -> str:
    """A count as the whole number it is (54740, never 5.474e+04); other values to 4 significant digits."""
    return f"{int(value)}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def judge(tol: Tolerance, candidate: np.ndarray, reference: np.ndarray, reference_top1: float | None,
          candidate_top1: float | None) -> tuple[Verdict, dict | None]:
    """Apply ``tol``; returns the verdict and the element check (None when atol/rtol are off)."""
    checks = [{"check": "non-finite outputs", "value": float(np.count_nonzero(~np.isfinite(candidate))),
               "limit": 0.0}]
    elements = None
    if tol.atol is not None and tol.rtol is not None:
        result = check_elements(reference, candidate, tol.atol, tol.rtol)
        elements = result.as_dict()
        checks.append({"check": f"elements over atol {tol.atol:g} x logit scale and rtol {tol.rtol:g}",
                       "value": float(result.mismatched), "limit": 0.0})
    if tol.max_top1_drop is not None and reference_top1 is not None and candidate_top1 is not None:
        checks.append({"check": "top-1 drop (points)", "value": 100.0 * (reference_top1 - candidate_top1),
                       "limit": tol.max_top1_drop})
    elif tol.min_agreement is not None:
        agreement = float(np.mean(np.argmax(candidate, 1) == np.argmax(reference, 1)))
        checks.append({"check": "top-1 agreement", "value": agreement, "limit": tol.min_agreement, "min": True})
    for check in checks:
        check["passed"] = bool(check["value"] >= check["limit"] if check.pop("min", False)
                               else check["value"] <= check["limit"])
    return Verdict(all(c["passed"] for c in checks), checks), elements


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
