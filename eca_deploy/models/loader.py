"""Build a registered (or timm) model and fit a weights file to it, inferring ECA k and class count."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..artifacts import sha256_file
from .checkpoint import load_strict, read_state_dict
from .base import TIMM_PREFIX, LoadedModel, eca_blocks, replace_module
from .eca import EcaLayer
from .registry import create_model, get_spec
from .timm_models import load_timm_model

def k_per_stage(blocks: Sequence[tuple[str, int, int]]) -> list[int]:
    """Collapse consecutive blocks with the same k: [3,3,5,5,5,7] -> [3,5,7] (a k3557 model reads 3,5,7)."""
    ks: list[int] = []
    for _, _, k in blocks:
        if not ks or ks[-1] != k:
            ks.append(k)
    return ks


def _fit_eca_kernels(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every ECA layer the kernel size its checkpoint weight has (released files differ per stage)."""
    for name, channels, k in eca_blocks(model):
        weight = state.get(f"{name}.conv.weight")
        if weight is not None and weight.dim() == 3 and weight.shape[-1] != k and weight.shape[-1] % 2 == 1:
            replace_module(model, name, EcaLayer(channels, int(weight.shape[-1])))


def settle_batchnorm(model: nn.Module, image_size: int = 64, seed: int = 0) -> None:
    """Give a randomly initialised model BN statistics from one batch of noise.

    At He initialisation a deep ResNet's activations grow block after block (ECA-ResNet152's logits
    reach ~700) and MobileNetV2's vanish (~1e-11), so a parity check on them measures nothing.
    Per-layer statistics bring every layer to the unit scale a trained network has.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics outright
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, image_size, image_size, generator=generator))
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def load_model(name: str, weights: str | Path | None = None, num_classes: int | None = None,
               k_size: Sequence[int] | None = None) -> LoadedModel:
    """Build ``name`` in eval mode; with ``weights``, read k and class count from the file, then load strictly."""
    if name.startswith(TIMM_PREFIX):
        return load_timm_model(name[len(TIMM_PREFIX):], weights, num_classes)

    spec = get_spec(name)
    state, meta = (read_state_dict(weights) if weights else ({}, {}))
    if state and num_classes is None:
        cls_weight = state.get(f"{spec.classifier}.weight")
        if cls_weight is not None and cls_weight.dim() == 2:
            num_classes = int(cls_weight.shape[0])
    num_classes = num_classes or 1000
    model = create_model(name, num_classes=num_classes, k_size=k_size)
    if weights:
        _fit_eca_kernels(model, state)
        load_strict(model, state, name, weights, meta)
    else:
        settle_batchnorm(model)
    model.eval()
    return LoadedModel(name, model, num_classes, str(weights) if weights else None,
                       sha256_file(weights) if weights else None, meta, spec.data_config)
