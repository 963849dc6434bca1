"""Build a registered (or timm) model and fit a weights file to it, inferring ECA k and class count."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..artifacts import sha256_file
from ..calibration.preprocess import MEAN as IMAGENET_MEAN, STD as IMAGENET_STD
from .checkpoint import load_strict, read_state_dict
from .eca import EcaLayer
from .registry import create_model, get_spec

TIMM_PREFIX = "timm:"


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    num_classes: int
    weights: str | None = None
    weights_sha256: str | None = None
    checkpoint_meta: dict = field(default_factory=dict)

    @property
    def eca_blocks(self) -> list[tuple[str, int, int]]:
        return eca_blocks(self.model)


def eca_blocks(model: nn.Module) -> list[tuple[str, int, int]]:
    """(module name, channels, k) of every ECA layer, in forward order."""
    return [(name, m.channels, m.k_size) for name, m in model.named_modules() if isinstance(m, EcaLayer)]


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


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _fit_eca_kernels(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every ECA layer the kernel size its checkpoint weight has (released files differ per stage)."""
    for name, channels, k in eca_blocks(model):
        weight = state.get(f"{name}.conv.weight")
        if weight is not None and weight.dim() == 3 and weight.shape[-1] != k and weight.shape[-1] % 2 == 1:
            replace_module(model, name, EcaLayer(channels, int(weight.shape[-1])))


def photo_like_batch(count: int = 16, image_size: int = 96, seed: int = 0) -> torch.Tensor:
    """Random images with the statistics of ImageNet-normalised photos: a 1/f amplitude spectrum (natural
    images' scale-free structure), colour channels correlated through a shared luminance, pixels in [0, 1],
    then the ImageNet mean/std. i.i.d. N(0, 1) noise has none of that structure and settles BN 40x off."""
    rng = np.random.default_rng(seed)
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(image_size), np.fft.fftfreq(image_size), indexing="ij"))
    amplitude = 1.0 / np.maximum(freq, 1.0 / image_size)

    def field(n: int) -> np.ndarray:
        spectrum = amplitude * np.exp(2j * np.pi * rng.random((n, image_size, image_size)))
        out = np.fft.ifft2(spectrum).real
        return (out - out.mean(axis=(1, 2), keepdims=True)) / out.std(axis=(1, 2), keepdims=True)

    luminance = field(count)[:, None]
    colour = field(count * 3).reshape(count, 3, image_size, image_size)
    pixels = rng.uniform(0.3, 0.6, (count, 3, 1, 1)) + 0.2 * (luminance + 0.4 * colour)
    pixels = np.clip(pixels, 0.0, 1.0)
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    return torch.from_numpy(((pixels - mean) / std).astype(np.float32))


def settle_batchnorm(model: nn.Module, image_size: int = 96, seed: int = 0) -> None:
    """Give a randomly initialised model BN statistics from one batch of photo-like images.

    At He initialisation a deep ResNet's activations grow block after block (ECA-ResNet152's logits
    reach ~700) and MobileNetV2's vanish (~1e-11), so a parity check on them measures nothing.
    Per-layer statistics bring every layer to the unit scale a trained network has, on inputs that look
    like what the model will see (statistics from noise left logits on real photos up to 1000x larger).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics outright
    batch = photo_like_batch(image_size=image_size, seed=seed)
    model.train()
    with torch.no_grad():
        model(batch)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


@contextmanager
def seeded_init(seed: int = 0) -> Iterator[None]:
    """Random init from a fixed seed (without touching the caller's RNG): the same command gives the same
    weights, so re-exports are byte-identical and calibration caches keyed by model hash still hit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_model(name: str, weights: str | Path | None = None, num_classes: int | None = None,
               k_size: Sequence[int] | None = None, seed: int = 0) -> LoadedModel:
    """Build ``name`` in eval mode; with ``weights``, read k and class count from the file, then load strictly."""
    if name.startswith(TIMM_PREFIX):
        from .timm_models import load_timm_model

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
        settle_batchnorm(model, seed=seed)
    model.eval()
    return LoadedModel(name, model, num_classes, str(weights) if weights else None,
                       sha256_file(weights) if weights else None, meta)
