"""Real photos for tests: crops of the two photos scikit-learn ships (a temple in China, a flower)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(folder: Path, count: int = 8, size: int = 96, seed: int = 0) -> list[Path]:
    """``count`` random square crops (JPEG and PNG, alternately) of sklearn's sample images into ``folder``."""
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = images[i % len(images)]
        side = int(rng.integers(size, min(image.shape[:2]) + 1))
        top = int(rng.integers(0, image.shape[0] - side + 1))
        left = int(rng.integers(0, image.shape[1] - side + 1))
        crop = Image.fromarray(image[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
        path = folder / f"photo_{i:03d}.{'jpg' if i % 2 == 0 else 'png'}"
        crop.save(path)
        paths.append(path)
    return paths
