"""Parameter and multiply-accumulate counts.

GFLOPs follow the ResNet / ECA-Net papers and timm: one multiply-add counts
once (ResNet-50 at 224x224 = 4.1 "GFLOPs").
"""

from __future__ import annotations

import torch
from torch import nn


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
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total / 1e9
