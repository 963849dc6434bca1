"""A timm-style model registry: ``@register_model`` on a builder, ``list_models``, ``create_model``."""

from __future__ import annotations

import difflib
from typing import Callable, Sequence

from torch import nn

from ..data.preprocess import DataConfig
from ..errors import ModelNotFoundError
from .base import TIMM_PREFIX, ModelSpec


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(default_k: Sequence[int], classifier: str, description: str = "",
                   data_config: DataConfig = DataConfig()):
    """The model families' modules register their builders as eca_deploy.models imports them."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        _REGISTRY[name] = ModelSpec(name, builder, tuple(default_k), classifier, description, data_config)
        return builder

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(_REGISTRY))}"
        raise ModelNotFoundError(f"unknown model '{name}'{hint} (timm models: {TIMM_PREFIX}<name>)") from None


def create_model(name: str, num_classes: int = 1000, k_size: Sequence[int] | None = None) -> nn.Module:
    spec = get_spec(name)
    k = tuple(k_size) if k_size is not None else spec.default_k
    if len(k) != len(spec.default_k):
        raise ModelNotFoundError(f"{name} takes {len(spec.default_k)} kernel sizes (one per stage), got {len(k)}")
    return spec.builder(num_classes=num_classes, k_size=k)

