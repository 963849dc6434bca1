"""Random init that behaves like a trained model: seeded (same command, same bytes) and with BatchNorm
statistics settled on photo-like inputs (real photos then give logits at a trained model's scale)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..data import synthetic
from ..data.preprocess import DEFAULT_DATA_CONFIG, DataConfig


@contextmanager
def seeded_init(seed: int = 0) -> Iterator[None]:
    """Random init from a fixed seed (without touching the caller's RNG): the same command gives the same
    weights, so re-exports are byte-identical and calibration caches keyed by model hash still hit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def photo_like_batch(count: int = 16, image_size: int = 96, seed: int = 0,
                     config: DataConfig = DEFAULT_DATA_CONFIG) -> torch.Tensor:
    """data.synthetic's photo-like images as a tensor, for the model code that feeds torch."""
    return torch.from_numpy(synthetic.photo_like_batch(count, image_size, seed, config))


def settle_batchnorm(model: nn.Module, image_size: int = 96, seed: int = 0,
                     config: DataConfig = DEFAULT_DATA_CONFIG) -> None:
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
    batch = photo_like_batch(image_size=image_size, seed=seed, config=config)
    model.train()
    with torch.no_grad():
        model(batch)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()
