"""Small corruptions of a checkpoint that a faithful-looking export must not pass as FP32: each moves the
logits by far more than float32 rounding does, and far less than a wrong graph would."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

State = dict[str, torch.Tensor]


def _classifier_every_7th(state: State, classifier: str) -> None:
    """The classifier's weights x 1.02 on every 7th input feature."""
    weight = next(v for k, v in state.items() if k == f"{classifier}.weight" or k.endswith(f".{classifier}.weight"))
    weight[:, ::7] *= 1.02


def _one_eca_weight(state: State, classifier: str) -> None:
    """The middle tap of the first ECA Conv1d (the only [1, 1, k] weights in these networks) x 1.01."""
    weight = next(v for v in state.values() if v.dim() == 3 and tuple(v.shape[:2]) == (1, 1))
    weight[0, 0, weight.shape[-1] // 2] *= 1.01


def _one_batchnorm_mean(state: State, classifier: str) -> None:
    """The first BatchNorm's first running mean shifted by 1% of that channel's std."""
    key = next(k for k in state if k.endswith("running_mean"))
    state[key][0] += 0.01 * state[key.replace("running_mean", "running_var")][0].sqrt()


CORRUPTIONS: dict[str, Callable[[State, str], None]] = {
    "classifier x1.02 on every 7th input": _classifier_every_7th,
    "one ECA Conv1d weight x1.01": _one_eca_weight,
    "one BatchNorm mean + 1% of its std": _one_batchnorm_mean,
}


def write_checkpoint(state: State, path: Path, corruption: str | None = None, classifier: str = "fc") -> Path:
    """``state`` (corrupted by CORRUPTIONS[corruption] where given) as a checkpoint at ``path``."""
    state = {key: value.detach().clone() for key, value in state.items()}
    if corruption is not None:
        CORRUPTIONS[corruption](state, classifier)
    torch.save({"state_dict": state}, path)
    return path
