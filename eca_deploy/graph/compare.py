"""Comparators: numbers that say how close a candidate's logits are to a reference's, and the verdict.

Kept apart from the runners that produce the logits (Polygraphy's split). The tolerances and ``judge``
live here, below export, the precision stage and the parity harness, so one definition decides: FP32
at its own rounding error (export's checks, parity, the pipeline), FP16 when quantize decides whether
to write an FP16 model and when parity checks it, INT8 by flipped answers in quantize's verdict and
in parity's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..precisions import FP32_FIXED, PRECISIONS, ROUNDING_FLOOR, ROUNDING_SAMPLES, TF32_TOLERANCE, Tolerance


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


def rounding_gap(float32: np.ndarray, float64: np.ndarray) -> float:
    """A model's own FP32 error on some inputs: the largest |float32 - float64| logit, each sample's in units
    of its logit scale."""
    exact = np.asarray(float64, dtype=np.float64).reshape(len(float64), -1)
    diff = np.abs(np.asarray(float32, dtype=np.float64).reshape(exact.shape) - exact)
    return float(np.max(diff.max(axis=1, initial=0.0) / logit_scale(exact), initial=0.0))


def scaled_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The candidate's largest |error|, each sample's in units of its reference logit scale (NaN: infinity)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    diff, _ = _abs_rel(ref, np.asarray(candidate, dtype=np.float64).reshape(ref.shape))
    worst = np.where(np.isnan(diff), np.inf, diff).max(axis=1, initial=0.0) / logit_scale(ref)
    return float(worst.max(initial=0.0))


def rounding_limit(gap: float, margin: float) -> float:
    """FP32's limit in units of the logit scale: ``margin`` x its own gap to float64, at least the floor."""
    return max(margin * gap, ROUNDING_FLOOR)


def rounding_check(tol: Tolerance, reference: np.ndarray, candidate: np.ndarray, gap: float) -> dict:
    """The FP32 check, with where its limit came from (export, parity and the pipeline all judge FP32 here)."""
    return {"check": "max error / logit scale", "value": scaled_error(reference, candidate),
            "limit": rounding_limit(gap, tol.rounding),
            "limit_from": f"{tol.rounding:g} x the reference's float32-vs-float64 gap ({gap:.3g} of its logit "
                          f"scale on {ROUNDING_SAMPLES} of the same inputs), at least {ROUNDING_FLOOR:g}",
            "gap": gap, "margin": tol.rounding, "floor": ROUNDING_FLOOR}


def tolerance_for(precision: str, overrides: dict[str, dict[str, float | None]] | None = None,
                  fp32_math: str = "fp32", rounding_known: bool = True) -> Tolerance:
    """The default for ``precision`` (TF32's where the backend runs FP32 in TF32) with overrides applied:
    {'atol': {'*': 1e-3, 'fp16': None}, ...}; overrides are keyed by the artifact's precision.

    FP32 is judged at its own rounding error where the reference can tell it (``rounding_known``: a PyTorch
    reference runs in float64 too), else, or where the user sets --atol/--rtol for it, by the fixed element
    check FP32_FIXED with the user's values."""
    tf32 = PRECISIONS[precision].exported and fp32_math == "tf32"
    tol = TF32_TOLERANCE if tf32 else PRECISIONS[precision].tolerance
    given = {}
    for name, per_precision in (overrides or {}).items():
        for key in ("*", precision):  # a precision-specific value wins over one for all
            if key in per_precision:
                given[name] = per_precision[key]
    if tol.rounding is not None and (not rounding_known or "atol" in given or "rtol" in given):
        tol = FP32_FIXED
    return replace(tol, **given)


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
    checks: list[dict] = field(default_factory=list)  # {"check", "value", "limit", "passed", ...}
    notes: list[str] = field(default_factory=list)  # what the data cannot resolve (a budget finer than 1/N)

    @property
    def failures(self) -> list[str]:
        return [f"{c['check']}: {figure(c['value'])} (limit {figure(c['limit'])})" for c in self.checks
                if not c["passed"]]


def figure(value: float) -> str:
    """A count as the whole number it is (54740, never 5.474e+04); other values to 4 significant digits."""
    return f"{int(value)}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def allowed_flips(fraction: float, images: int) -> int:
    """How many of ``images`` may flip within ``fraction`` of them (the budget moves in steps of 1/N)."""
    return math.floor(fraction * images + 1e-9)


def resolution_notes(tol: Tolerance, images: int, labeled: bool) -> list[str]:
    """Where an INT8 budget is finer than ``images`` can resolve: it then allows no flip at all."""
    notes = []
    step = 100.0 / max(images, 1)
    if tol.min_agreement is not None and tol.min_agreement < 1 and not allowed_flips(1 - tol.min_agreement, images):
        notes.append(f"on {images} images top-1 agreement moves in steps of {step:.3g}%: min agreement "
                     f"{tol.min_agreement:g} allows no flip (every image must match); it takes "
                     f"{math.ceil(1 / (1 - tol.min_agreement))} images to allow one")
    if labeled and tol.max_top1_drop and not allowed_flips(tol.max_top1_drop / 100, images):
        notes.append(f"on {images} images the top-1 drop moves in steps of {step:.3g} points: "
                     f"{tol.max_top1_drop:g} points allows no right-to-wrong flip; it takes "
                     f"{math.ceil(100 / tol.max_top1_drop)} images to allow one")
    return notes


def count_flips(candidate: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Images whose top-1 answer changed; with labels also those right in the reference and wrong in the
    candidate (right_to_wrong) and the reverse (wrong_to_right). None where there are no labels."""
    ref_top1, cand_top1 = np.argmax(reference, 1), np.argmax(candidate, 1)
    counts = {"images": int(len(ref_top1)), "flips": int(np.count_nonzero(ref_top1 != cand_top1)),
              "right_to_wrong": None, "wrong_to_right": None}
    if labels is not None:
        right = ref_top1 == np.asarray(labels).reshape(-1)
        counts["right_to_wrong"] = int(np.count_nonzero(right & (cand_top1 != ref_top1)))
        counts["wrong_to_right"] = int(np.count_nonzero(~right & (cand_top1 == np.asarray(labels).reshape(-1))))
    return counts


def flip_checks(tol: Tolerance, candidate: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> list[dict]:
    """INT8's checks, counted from the images whose top-1 answer changed: agreement with the reference (with
    or without labels) and, with labels, the top-1 drop from right-to-wrong flips only (wrong-to-right flips
    cannot cancel them, as they do in a difference of accuracies)."""
    counts = count_flips(candidate, reference, labels)
    images = max(counts["images"], 1)
    checks = []
    if tol.min_agreement is not None:
        checks.append({"check": "top-1 agreement", "value": 1.0 - counts["flips"] / images,
                       "limit": tol.min_agreement, "min": True, **counts,
                       "allowed_flips": allowed_flips(1 - tol.min_agreement, images)})
    if tol.max_top1_drop is not None and labels is not None:
        checks.append({"check": "top-1 drop (right-to-wrong flips, points)",
                       "value": 100.0 * counts["right_to_wrong"] / images, "limit": tol.max_top1_drop, **counts,
                       "allowed_flips": allowed_flips(tol.max_top1_drop / 100, images)})
    return checks


def judge(tol: Tolerance, candidate: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None,
          rounding_gap: float | None = None) -> tuple[Verdict, dict | None]:
    """Apply ``tol``: the one verdict of parity, the pipeline and quantize's own checks. Returns it and the
    element check (None when atol/rtol are off). ``rounding_gap`` (rounding_gap()) is needed for FP32's check."""
    checks = [{"check": "non-finite outputs", "value": float(np.count_nonzero(~np.isfinite(candidate))),
               "limit": 0.0}]
    elements = None
    if tol.rounding is not None:
        if rounding_gap is None:
            raise ValueError("FP32 at its rounding error needs the reference's float64 gap (tolerance_for "
                             "with rounding_known=False gives the fixed check)")
        checks.append(rounding_check(tol, reference, candidate, rounding_gap))
    if tol.atol is not None and tol.rtol is not None:
        result = check_elements(reference, candidate, tol.atol, tol.rtol)
        elements = result.as_dict()
        checks.append({"check": f"elements over atol {tol.atol:g} x logit scale and rtol {tol.rtol:g}",
                       "value": float(result.mismatched), "limit": 0.0})
    checks += flip_checks(tol, candidate, reference, labels)
    for check in checks:
        check["passed"] = bool(check["value"] >= check["limit"] if check.pop("min", False)
                               else check["value"] <= check["limit"])
    return Verdict(all(c["passed"] for c in checks), checks,
                   resolution_notes(tol, len(reference), labels is not None)), elements


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
