"""Random-init exports shared by a whole test run: each registered model exported once, on first use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..export.onnx_export import ExportConfig, ExportResult, export_model
from ..models import LoadedModel, load_model

IMGSZ = 64  # small: the export path and its checks do not depend on the image size


@dataclass(frozen=True)
class RandomExport:
    """One model's seeded random init, its export (dynamic batch, IMGSZ px) and its weights file."""

    loaded: LoadedModel
    result: ExportResult
    weights: Path

    @property
    def onnx(self) -> Path:
        return self.result.onnx_path


class RandomExports(dict):
    """name -> RandomExport, exported (ExportConfig defaults, seed 0) the first time a test asks for it.

    Exports are the slowest step most tests share (a ResNet-50 takes seconds); tests must treat these files as
    read-only and copy them where they need to write beside them."""

    def __init__(self, out: Path):
        super().__init__()
        self.out = out

    def __missing__(self, name: str) -> RandomExport:
        folder = self.out / name
        loaded = load_model(name)  # seeded (seed 0): the same weights whichever test asks first
        result = export_model(ExportConfig(model=name, out_dir=str(folder), imgsz=IMGSZ), loaded=loaded)
        weights = folder / f"{name}_random.pth"
        torch.save(loaded.model.state_dict(), weights)
        self[name] = RandomExport(loaded, result, weights)
        return self[name]
