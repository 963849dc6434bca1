"""Tolerance decisions: defaults per precision, overrides, and the verdict each rule gives."""

import numpy as np
import pytest

from eca_deploy.errors import EcaDeployError
from eca_deploy.precisions import PRECISIONS, TF32_TOLERANCE, Tolerance
from eca_deploy.runtime.harness.parity import judge, parse_override, tolerance_for


@pytest.fixture(scope="module")
def reference():
    return np.random.default_rng(0).normal(0, 5, size=(200, 10))


def test_defaults_tighten_with_precision():
    fp32, fp16, int8 = (PRECISIONS[p].tolerance for p in ("fp32", "fp16", "int8"))
    assert fp32.atol < fp16.atol and fp32.rtol < fp16.rtol
    assert int8.atol is None and int8.rtol is None  # INT8 is judged by accuracy, not element by element
    assert int8.max_top1_drop == 1.0 and int8.min_agreement is not None


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
    assert tolerance_for("fp32", overrides) == Tolerance(atol=0.5, rtol=None)
    assert tolerance_for("fp16", overrides).atol == 0.7
    int8 = tolerance_for("int8", overrides)
    assert int8.max_top1_drop == 2.5 and int8.atol == 0.5
    assert tolerance_for("fp16") == PRECISIONS["fp16"].tolerance


def test_tensorrt_fp32_engines_get_the_tf32_tolerance():
    assert tolerance_for("fp32", fp32_math="tf32") == TF32_TOLERANCE
    assert TF32_TOLERANCE.atol > PRECISIONS["fp32"].tolerance.atol
    assert tolerance_for("fp32", {"atol": {"fp32": 0.2}}, fp32_math="tf32").atol == 0.2  # flags still say fp32
    assert tolerance_for("fp16", fp32_math="tf32") == PRECISIONS["fp16"].tolerance


def test_fp32_noise_passes_and_one_bad_element_fails(reference):
    tol = PRECISIONS["fp32"].tolerance
    close = reference + 1e-5
    verdict, elements = judge(tol, close, reference, None, None)
    assert verdict.passed and elements["mismatched"] == 0
    bad = close.copy()
    bad[3, 4] += 0.5
    verdict, elements = judge(tol, bad, reference, None, None)
    assert not verdict.passed and elements["mismatched"] == 1
    assert "elements over atol" in verdict.failures[0]


def test_large_logits_pass_on_relative_error_alone():
    """Polygraphy semantics: abs error 0.01 on a logit of 1000 is 1e-5 relative; fp32 must pass it."""
    ref = np.full((2, 3), 1000.0)
    verdict, elements = judge(PRECISIONS["fp32"].tolerance, ref + 0.01, ref, None, None)
    assert verdict.passed and elements["mismatched"] == 0
    strict = Tolerance(atol=1e-3, rtol=1e-6)
    assert not judge(strict, ref + 0.01, ref, None, None)[0].passed


def test_int8_with_labels_is_judged_by_accuracy_drop(reference):
    tol = PRECISIONS["int8"].tolerance
    # the logits are far apart (agreement 0) yet a 0.5 point drop passes: accuracy is what counts here
    shuffled = reference[::-1]
    verdict, elements = judge(tol, shuffled, reference, 0.900, 0.895)
    assert verdict.passed and elements is None
    assert [c["check"] for c in verdict.checks] == ["non-finite outputs", "top-1 drop (points)"]
    assert verdict.checks[1]["value"] == pytest.approx(0.5)
    verdict, _ = judge(tol, reference, reference, 0.900, 0.880)
    assert not verdict.passed and "top-1 drop" in verdict.failures[0]


def test_int8_without_labels_is_judged_by_agreement(reference):
    tol = PRECISIONS["int8"].tolerance
    flipped = reference.copy()
    winners = np.argmax(reference, 1)
    n_flip = round(len(reference) * (1 - tol.min_agreement)) + 1  # one more than the limit allows
    flipped[np.arange(n_flip), winners[:n_flip]] -= 100.0
    verdict, _ = judge(tol, flipped, reference, None, None)
    agreement = verdict.checks[-1]
    assert agreement["check"] == "top-1 agreement"
    assert agreement["value"] == pytest.approx(1 - n_flip / len(reference))
    assert not verdict.passed
    assert judge(tol, reference + 0.01, reference, None, None)[0].passed


def test_non_finite_output_always_fails(reference):
    broken = reference.copy()
    broken[0, 0] = np.inf
    loose = Tolerance(atol=None, rtol=None, max_top1_drop=100.0)
    verdict, _ = judge(loose, broken, reference, 0.5, 0.5)
    assert not verdict.passed and verdict.failures[0].startswith("non-finite outputs: 1 ")
