"""The Efficient Channel Attention layer (Wang et al., CVPR 2020).

Numerically the official ``eca_layer`` (github BangguWu/ECANet): global average
pool, Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False) across the channel
vector [N, 1, C], sigmoid, channel-wise scale. The official forward reaches
[N, 1, C] through squeeze + transpose and scales with ``expand_as``; traced to
ONNX that leaves Shape/Expand/Transpose nodes in every block. Here both
reshapes use the channel count known at construction, so each exports as one
Reshape with a constant shape, and the multiply broadcasts.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def adaptive_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The paper's rule: k = |log2(C) / gamma + b / gamma|, taken to the nearest odd number.

    The nearest odd number to t is 2 * floor(t / 2) + 1 (t = 4.5 -> 5, t = 3.9 -> 3).
    """
    t = (math.log2(channels) + b) / gamma
    return 2 * int(math.floor(t / 2)) + 1


class EcaLayer(nn.Module):
    """ECA block; parameter names match the official code (``conv.weight`` of shape [1, 1, k])."""

    def __init__(self, channels: int, k_size: int = 3):
        super().__init__()
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"ECA kernel size must be a positive odd number, got {k_size}")
        self.channels = int(channels)
        self.k_size = int(k_size)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)  # [N, C, 1, 1]
        y = self.conv(y.reshape(-1, 1, self.channels))  # [N, 1, C]: 1-D conv across channels
        y = self.sigmoid(y.reshape(-1, self.channels, 1, 1))
        return x * y

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}"
