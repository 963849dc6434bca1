"""ECA-ResNet with the official topology (BangguWu/ECANet models/eca_resnet.py).

ECA sits after the last BN of each residual block, before the residual add, with
one kernel size per stage. Module and parameter names match the official code,
so its checkpoints load as they are. Two departures, both inert on 224x224
inputs: the classifier pools adaptively (official: AvgPool2d(7)), so any input
size from 32 up works, and ``resnet50`` (no ECA) is registered as the baseline
for overhead measurements.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .eca import EcaLayer
from .registry import register_model


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ECABasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 k_size: int | None = 3):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.eca = EcaLayer(planes, k_size) if k_size else nn.Identity()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.eca(self.bn2(self.conv2(out)))
        return self.relu(out + residual)


class ECABottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 k_size: int | None = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.eca = EcaLayer(planes * 4, k_size) if k_size else nn.Identity()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.eca(self.bn3(self.conv3(out)))
        return self.relu(out + residual)


class ResNet(nn.Module):
    """``k_size`` holds one ECA kernel size per stage; an empty sequence builds a plain ResNet."""

    def __init__(self, block: type[nn.Module], layers: Sequence[int], num_classes: int = 1000,
                 k_size: Sequence[int] = (3, 3, 3, 3)):
        super().__init__()
        ks: list[int | None] = [int(k) for k in k_size] if k_size else [None] * 4
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], ks[0])
        self.layer2 = self._make_layer(block, 128, layers[1], ks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], ks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], ks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        # The official initialisation (He normal for convs, BN at 1/0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, k_size: int | None, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, k_size=k_size)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, k_size=k_size) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_FC = "fc"


@register_model(default_k=(3, 5, 7, 7), classifier=_FC, description="ECA-ResNet-18 (released k3577)")
def eca_resnet18(num_classes: int = 1000, k_size: Sequence[int] = (3, 5, 7, 7)) -> ResNet:
    return ResNet(ECABasicBlock, [2, 2, 2, 2], num_classes, k_size)


@register_model(default_k=(3, 3, 5, 7), classifier=_FC, description="ECA-ResNet-34 (released k3357)")
def eca_resnet34(num_classes: int = 1000, k_size: Sequence[int] = (3, 3, 5, 7)) -> ResNet:
    return ResNet(ECABasicBlock, [3, 4, 6, 3], num_classes, k_size)


@register_model(default_k=(3, 5, 5, 7), classifier=_FC, description="ECA-ResNet-50 (released k3557)")
def eca_resnet50(num_classes: int = 1000, k_size: Sequence[int] = (3, 5, 5, 7)) -> ResNet:
    return ResNet(ECABottleneck, [3, 4, 6, 3], num_classes, k_size)


@register_model(default_k=(3, 3, 5, 7), classifier=_FC, description="ECA-ResNet-101 (released k3357)")
def eca_resnet101(num_classes: int = 1000, k_size: Sequence[int] = (3, 3, 5, 7)) -> ResNet:
    return ResNet(ECABottleneck, [3, 4, 23, 3], num_classes, k_size)


@register_model(default_k=(3, 3, 5, 7), classifier=_FC, description="ECA-ResNet-152 (released k3357)")
def eca_resnet152(num_classes: int = 1000, k_size: Sequence[int] = (3, 3, 5, 7)) -> ResNet:
    return ResNet(ECABottleneck, [3, 8, 36, 3], num_classes, k_size)


@register_model(default_k=(), classifier=_FC, description="ResNet-50 without ECA (overhead baseline)")
def resnet50(num_classes: int = 1000, k_size: Sequence[int] = ()) -> ResNet:
    return ResNet(ECABottleneck, [3, 4, 6, 3], num_classes, ())
