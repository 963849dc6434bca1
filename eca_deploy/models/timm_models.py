"""timm's ECA models (``timm:ecaresnet50d`` etc.) through the same export path.

timm names the attention module ``se`` and computes its kernel from the channel
count; its forward reaches [N, 1, C] through ``x.shape`` and ``expand_as``, which
traces to Shape/Gather/Expand nodes. We load timm's weights into timm's model,
then swap each EcaModule for our :class:`EcaLayer` with the same weights, so the
exported graph has the plain ECA shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..artifacts import sha256_file
from ..data.preprocess import INTERPOLATIONS, DataConfig
from ..errors import MissingDependencyError, ModelNotFoundError, first_line, missing_dependency
from .checkpoint import load_strict, read_state_dict
from .eca import EcaLayer
from .base import TIMM_PREFIX, LoadedModel, replace_module


def _import_timm():
    try:
        import timm
    except ImportError as exc:
        raise missing_dependency("timm", "pip install 'eca-deploy[timm]'") from exc
    except Exception as exc:  # timm imports torchvision, which fails beside a mismatched torch
        raise MissingDependencyError(f"timm could not be imported ({first_line(exc)}); "
                                     "install a torchvision that matches your torch") from exc
    return timm


def swap_eca_modules(model: nn.Module, image_size: int = 224) -> None:
    """Replace timm EcaModule layers by EcaLayer with identical weights (channels found by a dry run)."""
    from timm.layers import EcaModule
    from timm.layers.activations import Sigmoid as TimmSigmoid

    targets = [(name, m) for name, m in model.named_modules() if type(m) is EcaModule]
    channels: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=name: channels.__setitem__(n, inp[0].shape[1]))
             for name, m in targets]
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    for h in hooks:
        h.remove()
    for name, old in targets:
        plain = (isinstance(old.gate, (nn.Sigmoid, TimmSigmoid)) and old.conv.bias is None
                 and getattr(old, "conv2", None) is None)
        if not plain:
            continue  # a variant we do not reproduce exactly (MLP, other gate): keep timm's module
        new = EcaLayer(channels[name], old.conv.kernel_size[0])
        new.conv.weight.data.copy_(old.conv.weight.data)
        replace_module(model, name, new)


def load_timm_model(name: str, weights: str | Path | None = None, num_classes: int | None = None):
    timm = _import_timm()
    if not timm.is_model(name):
        close = [m for m in timm.list_models("*eca*") if name in m or m in name][:3]
        raise ModelNotFoundError(f"unknown timm model '{name}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
    state, meta = (read_state_dict(weights) if weights else ({}, {}))
    probe = timm.create_model(name, pretrained=False)
    classifier = probe.pretrained_cfg.get("classifier", "fc")
    if state and num_classes is None and f"{classifier}.weight" in state:
        num_classes = int(state[f"{classifier}.weight"].shape[0])
    model = probe if not num_classes or num_classes == probe.num_classes else \
        timm.create_model(name, pretrained=False, num_classes=num_classes)
    if weights:
        load_strict(model, state, f"{TIMM_PREFIX}{name}", weights, meta)
    model.eval()
    swap_eca_modules(model, int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]))
    return LoadedModel(f"{TIMM_PREFIX}{name}", model, int(model.num_classes), str(weights) if weights else None,
                       sha256_file(weights) if weights else None, meta, timm_data_config(model.pretrained_cfg))


def timm_data_config(cfg: dict) -> DataConfig:
    """timm's pretrained_cfg (input_size, mean, std, crop_pct, interpolation) as our DataConfig."""
    default = DataConfig()
    interpolation = cfg.get("interpolation", default.interpolation)
    return DataConfig(
        input_size=int(cfg.get("input_size", (3, default.input_size, default.input_size))[-1]),
        mean=tuple(cfg.get("mean", default.mean)), std=tuple(cfg.get("std", default.std)),
        resize_ratio=1.0 / float(cfg.get("crop_pct", 1.0 / default.resize_ratio)),
        interpolation=interpolation if interpolation in INTERPOLATIONS else default.interpolation)
