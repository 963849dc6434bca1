"""Streaming statistics and the three range methods."""

import numpy as np
import pytest

from eca_deploy.calibration.int8.calibrators import (NUM_BINS, TensorStats, entropy_amax, percentile_amax)


def _batches(seed=0):
    """Activation-like batches whose range grows, so the histogram has to re-bin several times."""
    rng = np.random.default_rng(seed)
    relu = [np.maximum(rng.standard_normal((4, 8, 16, 16)) * s, 0).astype(np.float32) for s in (0.01, 0.5, 3.0, 40.0)]
    signed = [(rng.standard_normal((4, 8, 16, 16)) * s).astype(np.float32) for s in (1.0, 0.2, 7.0)]
    return relu, signed


@pytest.mark.parametrize("kind", [0, 1], ids=["relu", "signed"])
def test_streaming_histogram_equals_one_pass(kind):
    batches = _batches()[kind]
    stats = TensorStats()
    for batch in batches:
        stats.update(batch)
    everything = np.concatenate([b.ravel() for b in batches])
    assert stats.min == everything.min() and stats.max == everything.max()
    assert stats.counts.sum() == everything.size
    assert stats.width > 0 and np.abs(everything).max() < NUM_BINS * stats.width
    # Merging neighbour bins is exact: the streamed counts equal a histogram of all data at the final width.
    expected = np.bincount((np.abs(everything) * np.float32(1 / stats.width)).astype(np.int64), minlength=NUM_BINS)
    mismatch = np.abs(stats.counts - expected).sum()
    assert mismatch <= everything.size * 1e-4  # float rounding at bin edges only


def test_percentile_matches_numpy():
    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_normal(200_000)).astype(np.float32)
    stats = TensorStats()
    stats.update(x)
    for p in (90.0, 99.0, 99.99):
        assert abs(percentile_amax(stats.counts, stats.width, p) - np.percentile(x, p)) <= 2 * stats.width


def test_the_three_methods_differ_on_heavy_tails():
    x = np.random.default_rng(2).standard_t(3, 200_000).astype(np.float32)  # heavy tails, like real activations
    stats = TensorStats()
    stats.update(x)
    minmax, entropy, percentile = (stats.amax(m) for m in ("minmax", "entropy", "percentile"))
    assert minmax == pytest.approx(np.abs(x).max())
    assert percentile == pytest.approx(np.percentile(np.abs(x), 99.99), abs=2 * stats.width)
    assert len({minmax, entropy, percentile}) == 3
    # Entropy clips the tail: well below max |x|, well above the bulk (99% of |x| lies under ~6).
    assert 2 * np.percentile(np.abs(x), 99) < entropy < minmax / 4


def test_entropy_keeps_the_whole_range_of_uniform_data():
    """Without outliers there is nothing to clip: the KL optimum is (close to) the maximum."""
    x = np.random.default_rng(3).uniform(-1, 1, 100_000).astype(np.float32)
    stats = TensorStats()
    stats.update(x)
    assert entropy_amax(stats.counts, stats.width) > 0.95


def test_asymmetric_range_is_clipped_by_amax():
    stats = TensorStats()
    stats.update(np.concatenate([np.linspace(-1, 0, 1000), np.linspace(0, 50, 10), np.zeros(5000)]).astype(np.float32))
    r = stats.range("percentile", 99.9)
    lo, hi = r.asymmetric
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(r.amax) and r.amax < 50
    assert stats.range("minmax").asymmetric == pytest.approx((-1.0, 50.0))


def test_non_finite_activations_are_refused():
    with pytest.raises(FloatingPointError):
        TensorStats().update(np.array([0.0, np.nan], dtype=np.float32))


def test_minmax_only_statistics_keep_no_histogram():
    stats = TensorStats(histogram=False)
    stats.update(np.arange(10, dtype=np.float32))
    assert stats.counts is None and stats.amax("minmax") == 9.0
    with pytest.raises(ValueError, match="histograms"):
        stats.amax("entropy")
