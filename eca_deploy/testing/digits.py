"""A real trained ECA-ResNet and real labeled images for tests, built in seconds on a CPU.

scikit-learn ships 1,797 handwritten digits (8x8, 16 gray levels). They are
upscaled to 32x32 grayscale PNGs, split into train / held-out (stratified,
seeded), and an ECA-ResNet-18 is trained on the train split through the same
preprocessing the toolchain applies to image files. On disk:

    root/val/<digit>/*.png     held-out split, ImageFolder layout (decoded by the real data path)
    root/calib/<digit>/*.png   a calibration subset of the train split, ImageFolder layout
    root/eca_resnet18_digits.pth.tar   official checkpoint layout (module.-prefixed state_dict, arch, epoch, best_prec1)
    root/onnx/eca_resnet18.onnx        exported with eca_deploy.export.onnx_export.export_model
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.preprocess import preprocess
from ..export.onnx_export import ExportConfig, export_model
from ..models import create_model

MODEL = "eca_resnet18"
IMGSZ = 32
NUM_CLASSES = 10
CALIB_IMAGES = 200
EPOCHS = 3  # enough for ~97% held-out top-1 (the fixture asserts what it reaches)
LR = 3e-3
BATCH = 64
SEED = 0


@dataclass(frozen=True)
class Digits:
    root: Path
    model: str  # registered model name
    checkpoint: Path  # official .pth.tar layout
    onnx: Path  # FP32 export, input [batch, 3, imgsz, imgsz]
    imgsz: int
    calib_dir: Path  # ImageFolder: a subset of the training images
    val_dir: Path  # ImageFolder: held-out images the model never saw
    num_classes: int
    val_accuracy: float  # FP32 PyTorch top-1 on val_dir, measured after training


def digit_images(size: int = IMGSZ, mode: str = "L") -> tuple[list[Image.Image], np.ndarray]:
    """scikit-learn's 8x8 digits upscaled to ``size`` as PIL images (``mode`` L or RGB), and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = [Image.fromarray(p, mode="L").resize((size, size), Image.BILINEAR).convert(mode) for p in pixels]
    return images, digits.target.astype(np.int64)


def write_image_folder(folder: Path, images: list[Image.Image], labels: np.ndarray, indices: np.ndarray) -> Path:
    """Real PNG files on disk, ImageFolder layout (one folder per digit)."""
    for i in indices:
        class_dir = folder / str(int(labels[i]))
        class_dir.mkdir(parents=True, exist_ok=True)
        images[i].save(class_dir / f"digit_{int(i):04d}.png")
    return folder


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = EPOCHS, lr: float = LR,
          batch: int = BATCH, seed: int = SEED) -> torch.nn.Module:
    """Adam with a one-cycle schedule; returns the model in eval mode.

    One thread and deterministic algorithms: the same numbers on every run of a machine, and no OpenMP
    spin-waiting when other processes share the cores (which stretched training many times over on a busy
    2-core machine). Subnormal floats slowed some steps by an order of magnitude, so they are flushed while
    training.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    torch.use_deterministic_algorithms(True)
    try:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        steps = epochs * ((len(x) + batch - 1) // batch)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch):
                idx = order[start:start + batch]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    return model.eval()


def build_digits(root: Path) -> Digits:
    from sklearn.model_selection import train_test_split

    root = Path(root)
    images, labels = digit_images()
    all_idx = np.arange(len(images))
    train_idx, val_idx = train_test_split(all_idx, test_size=0.3, random_state=SEED, stratify=labels)
    calib_idx, _ = train_test_split(train_idx, train_size=CALIB_IMAGES, random_state=SEED,
                                    stratify=labels[train_idx])
    write_image_folder(root / "val", images, labels, np.sort(val_idx))
    write_image_folder(root / "calib", images, labels, np.sort(calib_idx))

    tensors = torch.from_numpy(np.stack([preprocess(im, IMGSZ) for im in images]))
    targets = torch.from_numpy(labels)
    torch.manual_seed(SEED)
    model = train(create_model(MODEL, num_classes=NUM_CLASSES), tensors[train_idx], targets[train_idx])
    with torch.no_grad():
        val_accuracy = float((model(tensors[val_idx]).argmax(1) == targets[val_idx]).float().mean())

    checkpoint = root / f"{MODEL}_digits.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "arch": MODEL,
                "epoch": EPOCHS, "best_prec1": 100.0 * val_accuracy}, checkpoint)
    result = export_model(ExportConfig(model=MODEL, weights=str(checkpoint), out_dir=str(root / "onnx"),
                                       imgsz=IMGSZ))
    return Digits(root, MODEL, checkpoint, result.onnx_path, IMGSZ, root / "calib", root / "val", NUM_CLASSES,
                  val_accuracy)


# What the built files depend on: this file, the model, export and decode code, and the packages that run it.
CACHE_SOURCES = ("testing/digits.py", "models", "export", "data", "graph", "artifacts.py", "precisions.py")
CACHE_PACKAGES = ("torch", "numpy", "onnx", "onnxruntime", "onnxsim", "scikit-learn", "pillow")


def cache_key() -> str:
    """A hash of the code and package versions that make the digits files: a change to either rebuilds them."""
    from importlib import metadata

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in CACHE_SOURCES:
        for path in sorted((package / name).rglob("*.py")) if (package / name).is_dir() else [package / name]:
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    for name in CACHE_PACKAGES:
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=absent".encode())
    return digest.hexdigest()[:16]


def _record(digits: Digits) -> dict:
    """digits.json: the fields, with paths relative to the folder (which is renamed after the build)."""
    return {key: str(value.relative_to(digits.root)) if isinstance(value, Path) else value
            for key, value in asdict(digits).items() if key != "root"}


def _load(root: Path) -> Digits:
    record = json.loads((root / "digits.json").read_text())
    paths = {k: root / v for k, v in record.items() if k in ("checkpoint", "onnx", "calib_dir", "val_dir")}
    return Digits(root=root, **{**record, **paths})


def cached_digits(cache_dir: Path) -> Digits:
    """The digits files, built once per version of their code into ``cache_dir``/digits-<key> and reused.

    Built in a private folder and renamed into place: the rename is atomic, so a concurrent run either wins
    it or finds the winner's complete folder (and drops its own). Treat the files as read-only. Building a new
    version removes the others.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / f"digits-{cache_key()}"
    if (final / "digits.json").exists():
        return _load(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    building = cache_dir / f".building-{uuid.uuid4().hex}"
    try:
        digits = build_digits(building)
        (building / "digits.json").write_text(json.dumps(_record(digits)))
        try:
            os.rename(building, final)
        except OSError:  # another run renamed its folder first: use that one
            if not (final / "digits.json").exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    # The cache keeps one version: earlier ones (about 50 MB each) would otherwise pile up with every code change.
    for stale in cache_dir.glob("digits-*"):
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    return _load(final)
