"""Tolerance decisions: defaults per precision, overrides, and the verdict each rule gives."""

import numpy as np
import pytest

from eca_deploy.errors import EcaDeployError
from eca_deploy.graph.compare import rounding_gap
from eca_deploy.precisions import FP32_FIXED, PRECISIONS, ROUNDING_FLOOR, ROUNDING_MARGIN, TF32_TOLERANCE, Tolerance
from eca_deploy.runtime.harness.parity import judge, parse_override, tolerance_for


@pytest.fixture(scope="module")
def reference():
    return np.random.default_rng(0).normal(0, 5, size=(200, 10))


def test_defaults_tighten_with_precision():
    fp32, fp16, int8 = (PRECISIONS[p].tolerance for p in ("fp32", "fp16", "int8"))
    assert fp32.rounding == ROUNDING_MARGIN and fp32.atol is None  # FP32 at its own rounding error
    assert FP32_FIXED.atol < fp16.atol and FP32_FIXED.rtol < fp16.rtol
    assert int8.atol is None and int8.rtol is None  # INT8 is judged by flipped answers, not element by element
    assert int8.max_top1_drop == 1.0 and int8.min_agreement == 0.97


@pytest.mark.parametrize("text, expected", [("1e-3", ("*", 1e-3)), ("fp16=0.2", ("fp16", 0.2)),
                                            ("int8=off", ("int8", None)), ("fp32=none", ("fp32", None))])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["fp64=1", "abc", "fp16=-1", "nan", "fp16="])
def test_parse_override_rejects_bad_values(text):
    with pytest.raises(EcaDeployError):
        parse_override(text)


def test_overrides_apply_per_precision_and_specific_wins():
    overrides = {"atol": {"*": 0.5, "fp16": 0.7}, "max_top1_drop": {"int8": 2.5}, "rtol": {"fp32": None}}
    assert tolerance_for("fp32", overrides) == Tolerance(atol=0.5, rtol=None)  # the user's fixed limit replaces
    assert tolerance_for("fp32") == PRECISIONS["fp32"].tolerance
    assert tolerance_for("fp32", rounding_known=False) == FP32_FIXED  # a reference that cannot run in float64
    assert tolerance_for("fp16", overrides).atol == 0.7
    int8 = tolerance_for("int8", overrides)
    assert int8.max_top1_drop == 2.5 and int8.atol == 0.5
    assert tolerance_for("fp16") == PRECISIONS["fp16"].tolerance


def test_tensorrt_fp32_engines_get_the_tf32_tolerance():
    assert tolerance_for("fp32", fp32_math="tf32") == TF32_TOLERANCE
    assert TF32_TOLERANCE.atol > FP32_FIXED.atol
    assert tolerance_for("fp32", {"atol": {"fp32": 0.2}}, fp32_math="tf32").atol == 0.2  # flags still say fp32
    assert tolerance_for("fp16", fp32_math="tf32") == PRECISIONS["fp16"].tolerance


def test_fp32_passes_at_its_own_rounding_error_and_fails_just_past_the_limit(reference):
    tol = PRECISIONS["fp32"].tolerance
    rng = np.random.default_rng(2)
    exact = reference[:4]
    float32 = exact.astype(np.float32).astype(np.float64)  # the reference's own rounding: the gap
    gap = rounding_gap(float32, exact)
    assert 0 < gap < 1e-6
    scale = np.sqrt(np.mean(reference ** 2, axis=1, keepdims=True))
    noisy = reference + rng.uniform(-1, 1, reference.shape) * 1e-7 * scale
    verdict, elements = judge(tol, noisy, reference, None, gap)
    check = verdict.checks[1]
    assert verdict.passed and elements is None and check["check"] == "max error / logit scale"
    assert check["limit"] == pytest.approx(max(ROUNDING_MARGIN * gap, ROUNDING_FLOOR))
    assert "float32-vs-float64 gap" in check["limit_from"]
    bad = reference.copy()
    bad[3, 4] += 1.01 * check["limit"] * scale[3, 0]  # one logit just past the limit
    verdict, _ = judge(tol, bad, reference, None, gap)
    assert not verdict.passed and verdict.failures[0].startswith("max error / logit scale")
    big_gap = 1e-3  # a model that rounds more gets more room: the limit follows its own error
    assert judge(tol, bad, reference, None, big_gap)[0].passed
    with pytest.raises(ValueError):
        judge(tol, reference, reference, None, None)


def test_fixed_fp32_check_is_elementwise_with_polygraphy_semantics(reference):
    close = reference + 1e-5
    verdict, elements = judge(FP32_FIXED, close, reference)
    assert verdict.passed and elements["mismatched"] == 0
    bad = close.copy()
    bad[3, 4] += 0.5
    verdict, elements = judge(FP32_FIXED, bad, reference)
    assert not verdict.passed and elements["mismatched"] == 1
    assert "elements over atol" in verdict.failures[0]
    ref = np.full((2, 3), 1000.0)  # abs error 0.01 on a logit of 1000 is 1e-5 relative: passes
    assert judge(FP32_FIXED, ref + 0.01, ref)[0].passed
    strict = Tolerance(atol=1e-6, rtol=1e-6)  # atol is x the logit scale (1000 here): 1e-3
    assert not judge(strict, ref + 0.01, ref)[0].passed


def _flip(logits: np.ndarray, rows, to) -> np.ndarray:
    """``logits`` with the given rows' top-1 answer moved to class ``to`` (per row)."""
    out = logits.copy()
    out[rows, to] = logits[rows].max(axis=1) + 1.0
    return out


def test_int8_drop_counts_right_to_wrong_flips_that_gains_cannot_cancel(reference):
    tol = PRECISIONS["int8"].tolerance
    winners = np.argmax(reference, 1)
    labels = winners.copy()
    labels[:40] = (winners[:40] + 1) % 10  # the reference gets 160 of 200 right
    # 3 right answers turned wrong, 3 wrong answers turned right: accuracy unchanged, 1.5 points lost
    lost, gained = np.arange(100, 103), np.arange(0, 3)
    cand = _flip(_flip(reference, lost, (winners[lost] + 5) % 10), gained, labels[gained])
    verdict, elements = judge(tol, cand, reference, labels)
    assert np.mean(cand.argmax(1) == labels) == np.mean(winners == labels)
    checks = {c["check"]: c for c in verdict.checks}
    drop = checks["top-1 drop (right-to-wrong flips, points)"]
    assert (drop["value"], drop["right_to_wrong"], drop["wrong_to_right"]) == (pytest.approx(1.5), 3, 3)
    assert not verdict.passed and elements is None and "top-1 drop" in verdict.failures[0]
    assert checks["top-1 agreement"]["flips"] == 6 and checks["top-1 agreement"]["passed"]  # 97% holds
    assert judge(tol, _flip(reference, lost[:2], (winners[lost[:2]] + 5) % 10), reference, labels)[0].passed


def test_int8_agreement_floor_holds_with_labels_too(reference):
    """Flips among images both get wrong cost no accuracy, but more than 3% of them fail the default."""
    tol = PRECISIONS["int8"].tolerance
    winners = np.argmax(reference, 1)
    labels = (winners + 1) % 10  # every answer wrong: no flip can be right-to-wrong
    rows = np.arange(7)  # 3.5% of 200
    verdict, _ = judge(tol, _flip(reference, rows, (winners[rows] + 3) % 10), reference, labels)
    assert not verdict.passed and verdict.failures == ["top-1 agreement: 0.965 (limit 0.97)"]


def test_both_budgets_apply_when_both_are_given(reference):
    winners = np.argmax(reference, 1)
    rows = np.arange(3)
    cand = _flip(reference, rows, (winners[rows] + 5) % 10)
    tol = tolerance_for("int8", {"max_top1_drop": {"int8": 5.0}, "min_agreement": {"int8": 0.99}})
    verdict, _ = judge(tol, cand, reference, winners)  # drop 1.5 <= 5, agreement 0.985 < 0.99
    assert [c["passed"] for c in verdict.checks] == [True, False, True]


def test_a_budget_finer_than_the_images_resolve_is_said(reference):
    tol = tolerance_for("int8", {"min_agreement": {"int8": 0.99}})
    verdict, _ = judge(tol, reference[:40], reference[:40])
    assert verdict.notes == ["on 40 images top-1 agreement moves in steps of 2.5%: min agreement 0.99 allows no "
                             "flip (every image must match); it takes 100 images to allow one"]
    assert verdict.checks[-1]["allowed_flips"] == 0
    verdict, _ = judge(tol, reference, reference, np.argmax(reference, 1))  # 200 images: 2 flips, 2 points
    assert verdict.notes == [] and verdict.checks[1]["allowed_flips"] == 2


def test_int8_without_labels_is_judged_by_agreement(reference):
    tol = PRECISIONS["int8"].tolerance
    flipped = reference.copy()
    winners = np.argmax(reference, 1)
    n_flip = round(len(reference) * (1 - tol.min_agreement)) + 1  # one more than the limit allows
    flipped[np.arange(n_flip), winners[:n_flip]] -= 100.0
    verdict, _ = judge(tol, flipped, reference)
    agreement = verdict.checks[-1]
    assert agreement["check"] == "top-1 agreement"
    assert agreement["value"] == pytest.approx(1 - n_flip / len(reference))
    assert not verdict.passed
    assert judge(tol, reference + 0.01, reference)[0].passed


def test_non_finite_output_always_fails(reference):
    broken = reference.copy()
    broken[0, 0] = np.inf
    loose = Tolerance(atol=None, rtol=None, max_top1_drop=100.0)
    verdict, _ = judge(loose, broken, reference, np.argmax(reference, 1))
    assert not verdict.passed and verdict.failures[0].startswith("non-finite outputs: 1 ")
