"""Types the model families, the registry and the loaders share (imported by them, importing none of them)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.preprocess import DataConfig
from .eca import EcaLayer

TIMM_PREFIX = "timm:"  # how a user names one of timm's models: timm:ecaresnet50d


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    default_k: tuple[int, ...]  # per stage, as in the released checkpoint names (k3557)
    classifier: str  # state_dict prefix of the final classifier, to read the class count
    description: str = ""
    data_config: DataConfig = DataConfig()  # what preprocessing feeds the model (timm's pretrained_cfg idea)


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    num_classes: int
    weights: str | None = None
    weights_sha256: str | None = None
    checkpoint_meta: dict = field(default_factory=dict)
    data_config: DataConfig = DataConfig()

    @property
    def eca_blocks(self) -> list[tuple[str, int, int]]:
        return eca_blocks(self.model)


def eca_blocks(model: nn.Module) -> list[tuple[str, int, int]]:
    """(module name, channels, k) of every ECA layer, in forward order."""
    return [(name, m.channels, m.k_size) for name, m in model.named_modules() if isinstance(m, EcaLayer)]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def float64_logits(model: nn.Module, batch: np.ndarray) -> np.ndarray:
    """``model``'s logits computed in float64 on a copy: the exact answer its float32 logits are a rounding of."""
    exact = copy.deepcopy(model).double()
    device = next(exact.parameters()).device
    with torch.no_grad():
        return exact(torch.from_numpy(np.asarray(batch, dtype=np.float64)).to(device)).cpu().numpy()
