"""Build a registered (or timm) model and fit a weights file to it, inferring ECA k and class count."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..artifacts import sha256_file
from .checkpoint import load_strict, read_state_dict
from .download import fetch_weights, is_url
from .base import TIMM_PREFIX, LoadedModel, eca_blocks, replace_module
from .eca import EcaLayer
from .random_init import seeded_init, settle_batchnorm
from .registry import create_model, get_spec
from .timm_models import load_timm_model


def stage_name(model: nn.Module, module_name: str) -> str:
    """The stage an ECA layer belongs to: the model's ``eca_stage`` where it has one, else the path up to the
    first block index (ResNet's layer1.0.eca and timm's layer1.0.se are in stage layer1)."""
    if hasattr(model, "eca_stage"):
        return model.eca_stage(module_name)
    parts = module_name.split(".")
    index = next((i for i, part in enumerate(parts) if part.isdigit()), len(parts))
    return ".".join(parts[:index])


def k_per_stage(model: nn.Module) -> list[int | list[int]]:
    """The ECA k of every stage, in forward order, repeats kept: a k3557 ECA-ResNet50 gives [3, 5, 5, 7].
    A stage whose blocks differ (a hand-edited checkpoint) gives the list of its blocks' k."""
    stages: dict[str, list[int]] = {}
    for name, _, k in eca_blocks(model):
        stages.setdefault(stage_name(model, name), []).append(k)
    return [ks[0] if len(set(ks)) == 1 else ks for ks in stages.values()]


def _fit_eca_kernels(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every ECA layer the kernel size its checkpoint weight has (released files differ per stage)."""
    for name, channels, k in eca_blocks(model):
        weight = state.get(f"{name}.conv.weight")
        if weight is not None and weight.dim() == 3 and weight.shape[-1] != k and weight.shape[-1] % 2 == 1:
            replace_module(model, name, EcaLayer(channels, int(weight.shape[-1])))


def load_model(name: str, weights: str | Path | None = None, num_classes: int | None = None,
               k_size: Sequence[int] | None = None, seed: int = 0) -> LoadedModel:
    """Build ``name`` in eval mode; with ``weights`` (a file or a URL), read k and class count from the file, then
    load strictly."""
    if is_url(weights):
        weights = str(fetch_weights(weights)[0])
    if name.startswith(TIMM_PREFIX):
        return load_timm_model(name[len(TIMM_PREFIX):], weights, num_classes, seed)

    spec = get_spec(name)
    state, meta = (read_state_dict(weights) if weights else ({}, {}))
    if state and num_classes is None:
        cls_weight = state.get(f"{spec.classifier}.weight")
        if cls_weight is not None and cls_weight.dim() == 2:
            num_classes = int(cls_weight.shape[0])
    num_classes = num_classes or 1000
    with seeded_init(seed):
        model = create_model(name, num_classes=num_classes, k_size=k_size)
    if weights:
        _fit_eca_kernels(model, state)
        load_strict(model, state, name, weights, meta)
    else:
        settle_batchnorm(model, seed=seed, config=spec.data_config)
    model.eval()
    return LoadedModel(name, model, num_classes, str(weights) if weights else None,
                       sha256_file(weights) if weights else None, meta, spec.data_config)
