"""ECA-MobileNetV2 with the official topology (BangguWu/ECANet models/eca_mobilenetv2.py).

ECA closes every inverted residual (after the projection BN, before the add);
the official rule gives k = 1 to blocks with fewer than 96 output channels and
k = 3 to the rest, which ``k_size`` = (k_small, k_large) expresses (released: k13).
Module names match the official code; the head pools adaptively (official:
mean over W then H, the same numbers up to float rounding).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .eca import EcaLayer
from .registry import register_model

# t (expansion), c (output channels), n (repeats), s (first stride)
INVERTED_RESIDUAL_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]
LARGE_CHANNELS = 96  # the official threshold between the two kernel sizes


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, k_size: int):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden_dim, kernel_size=1))
        layers += [
            ConvBNReLU(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
            EcaLayer(oup, k_size),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class ECAMobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, k_size: Sequence[int] = (1, 3), width_mult: float = 1.0):
        super().__init__()
        k_small, k_large = (int(k) for k in k_size)
        input_channel = int(32 * width_mult)
        self.last_channel = int(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU(3, input_channel, stride=2)]
        self.stage_of_feature: dict[str, str] = {}  # features.<i> -> the inverted-residual group (stage) it is in
        for stage, (t, c, n, s) in enumerate(INVERTED_RESIDUAL_SETTING):
            output_channel = int(c * width_mult)
            k = k_small if c < LARGE_CHANNELS else k_large
            for i in range(n):
                self.stage_of_feature[f"features.{len(features)}"] = f"stage{stage + 1}"
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t, k))
                input_channel = output_channel
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.25), nn.Linear(self.last_channel, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def eca_stage(self, module_name: str) -> str:
        """The stage of an ECA layer: its inverted-residual group (features.<i> names no stage itself)."""
        return self.stage_of_feature[".".join(module_name.split(".")[:2])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model(default_k=(1, 3), classifier="classifier.1",
                description="ECA-MobileNetV2 (released k13: k=1 below 96 channels, else 3)")
def eca_mobilenetv2(num_classes: int = 1000, k_size: Sequence[int] = (1, 3)) -> ECAMobileNetV2:
    return ECAMobileNetV2(num_classes, k_size)
