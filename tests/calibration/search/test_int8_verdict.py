"""quantize's INT8 verdict and method choice, on figures alone: parity's tolerance with the user's budget (both
values apply), closeness before accuracy, and a choice the images cannot resolve said to be within noise."""

from types import SimpleNamespace

import pytest

from eca_deploy.calibration.search.evaluate import (budget_tolerance, check_budget, describe_budget, flip_noise,
                                                    select_method)
from eca_deploy.errors import QuantizationError
from eca_deploy.precisions import PRECISIONS


def test_budget_is_parity_int8_tolerance_with_the_given_values():
    assert budget_tolerance("int8") == PRECISIONS["int8"].tolerance
    both = budget_tolerance("int8", {}, max_top1_drop=2.0, min_agreement=0.99)
    assert (both.max_top1_drop, both.min_agreement) == (2.0, 0.99)
    assert describe_budget(both, True) == "top-1 agreement >= 0.99 and top-1 drop <= 2 points from right-to-wrong flips"
    assert describe_budget(both, False) == "top-1 agreement >= 0.99"
    # parity's flags reach it too: --min-agreement int8=off turns that check off
    assert budget_tolerance("int8", {"min_agreement": {"int8": None}}).min_agreement is None
    with pytest.raises(QuantizationError, match="needs labeled held-out images"):
        check_budget(max_top1_drop=1.0, labeled=False)
    with pytest.raises(QuantizationError, match="--min-agreement must be a fraction"):
        budget_tolerance("int8", {}, min_agreement=1.5)


def _candidates(**figures):
    return {m: SimpleNamespace(figures={"flips": f, "top1_agreement": 1 - f / 128, "min_cosine": c, "cosine": c,
                                        "top1_drop": d}) for m, (f, c, d) in figures.items()}


def test_auto_ranks_by_closeness_not_by_signed_accuracy():
    """minmax gains 1 point of accuracy by flipping 4 answers; percentile flips none: percentile is closer."""
    chosen, selection = select_method(_candidates(minmax=(4, 0.99, -1.0), percentile=(0, 0.999, 0.0)), 128)
    assert chosen == "percentile" and selection["reason"].startswith("fewer flipped answers than minmax: 0 vs 4")


def test_a_choice_within_noise_is_said():
    chosen, selection = select_method(_candidates(minmax=(1, 0.99, 0.0), entropy=(0, 0.98, 0.0)), 128)
    assert chosen == "entropy" and selection["within_noise"]
    assert "within noise: 0 vs 1 flips on 128 images" in selection["reason"]
    _, selection = select_method(_candidates(minmax=(69, 0.2, 53.0), entropy=(1, 0.98, 0.8)), 128)
    assert not selection["within_noise"] and "within noise" not in selection["reason"]
    assert flip_noise(0, 1) == 2 and flip_noise(50, 50) == 20
