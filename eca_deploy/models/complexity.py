"""Parameter and multiply-accumulate counts.

GFLOPs follow the ResNet / ECA-Net papers and timm: one multiply-add counts
once (ResNet-50 at 224x224 = 4.1 "GFLOPs"). Counting runs the model on whatever device
its parameters live on; on the meta device only shapes propagate, so the whole zoo is
counted in well under a second (running it on real 224x224 tensors took 22-30 s).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .base import replace_module
from .registry import create_model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, image_size: int = 224) -> float:
    """Multiply-accumulates of Conv1d/Conv2d/Linear layers for one image, in billions."""
    total = 0

    def conv_hook(mod: nn.Module, inp, out) -> None:
        nonlocal total
        kernel = mod.weight[0].numel()  # (C_in / groups) * prod(kernel)
        total += out[0].numel() * kernel

    def linear_hook(mod: nn.Linear, inp, out) -> None:
        nonlocal total
        total += out[0].numel() * mod.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total / 1e9


@contextlib.contextmanager
def _shapes_only() -> Iterator[None]:
    """Modules built on the meta device with torch.nn.init's fills skipped: only shapes are wanted, and
    meta's first normal_ alone costs 1.5 s (it loads decompositions)."""
    fills = {name: getattr(nn.init, name) for name in dir(nn.init) if name.endswith("_") and not name.startswith("_")}
    try:
        for name in fills:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        with torch.device("meta"):
            yield
    finally:
        for name, fill in fills.items():
            setattr(nn.init, name, fill)


# (parameters, multiply-accumulates) of each registered model at 224x224 with its default k, equal to
# counted_complexity (the tests check every model): `models` prints them without building anything,
# since even the meta-device count spends ~2 s loading PyTorch's meta kernels.
STORED_224 = {
    "eca_mobilenetv2": (3_504_903, 300_777_952),
    "eca_resnet101": (44_549_317, 7_801_574_656),
    "eca_resnet152": (60_193_042, 11_513_868_544),
    "eca_resnet18": (11_689_556, 1_814_085_760),
    "eca_resnet34": (21_797_744, 3_663_781_952),
    "eca_resnet50": (25_557_112, 4_089_270_528),
    "resnet50": (25_557_032, 4_089_184_256),
}


def model_complexity(name: str, image_size: int = 224) -> tuple[int, float]:
    """(parameters, GMACs) of a registered model: the stored figures at 224, else counted on the meta device."""
    if image_size == 224 and name in STORED_224:
        params, macs = STORED_224[name]
        return params, macs / 1e9
    return counted_complexity(name, image_size)


def counted_complexity(name: str, image_size: int = 224) -> tuple[int, float]:
    """(parameters, GMACs) of a registered model built on the meta device: no weight is initialised and
    no number computed, only shapes."""
    with _shapes_only():
        model = create_model(name)
    params = count_parameters(model)
    # BatchNorm keeps shapes and counts no MACs, but meta runs it through slow Python decompositions.
    for module_name, module in list(model.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            replace_module(model, module_name, nn.Identity())
    return params, count_gmacs(model, image_size)
