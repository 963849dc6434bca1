"""Parity metrics against values computed independently, element by element in plain Python."""

import math

import numpy as np
import pytest

from eca_deploy.graph.compare import check_elements, compare_outputs, topk_accuracy


def _rows(array):
    return [[float(v) for v in row] for row in array]


def _ranked(row):
    return sorted(range(len(row)), key=lambda i: (-row[i], i))


@pytest.fixture(scope="module")
def logits():
    rng = np.random.default_rng(7)
    ref = rng.normal(0, 4, size=(40, 12)).astype(np.float32)
    cand = (ref + rng.normal(0, 0.3, size=ref.shape)).astype(np.float32)
    return ref, cand


def test_compare_outputs_matches_plain_python(logits):
    ref, cand = logits
    r, c = _rows(ref), _rows(cand)
    diffs = [abs(a - b) for ra, ca in zip(r, c) for a, b in zip(ra, ca)]
    rels = [abs(a - b) / abs(a) for ra, ca in zip(r, c) for a, b in zip(ra, ca)]
    cosines = [sum(a * b for a, b in zip(ra, ca)) / (math.sqrt(sum(a * a for a in ra)) * math.sqrt(sum(b * b for b in ca)))
               for ra, ca in zip(r, c)]
    agree = [_ranked(ra)[0] == _ranked(ca)[0] for ra, ca in zip(r, c)]
    overlap = [len(set(_ranked(ra)[:5]) & set(_ranked(ca)[:5])) / 5 for ra, ca in zip(r, c)]

    got = compare_outputs(ref, cand)
    assert got.max_abs == pytest.approx(max(diffs), rel=1e-12)
    assert got.mean_abs == pytest.approx(sum(diffs) / len(diffs), rel=1e-12)
    assert got.max_rel == pytest.approx(max(rels), rel=1e-12)
    assert got.cosine == pytest.approx(sum(cosines) / len(cosines), rel=1e-12)
    assert got.min_cosine == pytest.approx(min(cosines), rel=1e-12)
    assert got.top1_agreement == pytest.approx(sum(agree) / len(agree))
    assert got.top5_overlap == pytest.approx(sum(overlap) / len(overlap))
    assert 0 < got.top1_agreement < 1  # the noise really moved some argmaxes: both branches are exercised


def test_element_check_fails_only_when_over_both_tolerances():
    atol, rtol = 0.1, 0.01
    ref = np.array([[100.0, 0.001, 5.0, -2.0, 0.0]])
    # 100 -> 100.5: abs 0.5 > atol, rel 0.005 < rtol: passes (large logit, small relative error)
    # 0.001 -> 0.05: rel 49 > rtol, abs 0.049 < atol: passes (near-zero logit)
    # 5 -> 5.5: abs 0.5 > atol and rel 0.1 > rtol: fails
    # -2 -> -2.0001: within both
    # 0 -> 0.2: abs 0.2 > atol, rel huge: fails
    cand = np.array([[100.5, 0.05, 5.5, -2.0001, 0.2]])
    result = check_elements(ref, cand, atol, rtol)
    assert result.mismatched == 2
    assert result.elements == 5
    assert not result.passed
    over_atol = [abs(c - r) / max(abs(r), np.finfo(np.float32).tiny)
                 for r, c in zip(ref[0], cand[0]) if abs(c - r) > atol]
    assert result.required_rtol == pytest.approx(max(over_atol))
    # the required rtol really is the smallest that passes at this atol
    assert check_elements(ref, cand, atol, result.required_rtol).passed
    assert not check_elements(ref, cand, atol, result.required_rtol * 0.999).passed


def test_element_check_counts_random_mismatches_like_a_loop(logits):
    ref, cand = logits
    atol, rtol = 0.3, 0.1
    expected = sum(1 for ra, ca in zip(_rows(ref), _rows(cand)) for a, b in zip(ra, ca)
                   if abs(a - b) > atol and abs(a - b) / abs(a) > rtol)
    assert 0 < expected < ref.size
    assert check_elements(ref, cand, atol, rtol).mismatched == expected


def test_nan_output_fails_at_any_tolerance():
    ref = np.array([[1.0, 2.0]])
    cand = np.array([[1.0, np.nan]])
    result = check_elements(ref, cand, 1e9, 1e9)
    assert result.mismatched == 1
    assert result.required_rtol == float("inf")


def test_topk_accuracy_matches_a_loop(logits):
    ref, _ = logits
    labels = np.random.default_rng(3).integers(0, ref.shape[1], size=len(ref))
    for k in (1, 5):
        expected = sum(int(label) in _ranked(row)[:k] for row, label in zip(_rows(ref), labels)) / len(labels)
        assert topk_accuracy(ref, labels, k) == pytest.approx(expected)
    assert topk_accuracy(ref, np.argmax(ref, 1), 1) == 1.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        check_elements(np.zeros((2, 3)), np.zeros((2, 4)), 1e-3, 1e-3)
    with pytest.raises(ValueError):
        topk_accuracy(np.zeros((2, 3)), np.zeros(3, dtype=int), 1)
