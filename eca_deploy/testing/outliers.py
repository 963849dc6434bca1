"""A trained network on which per-tensor INT8 provably fails while its FP32 function is unchanged.

Function-preserving channel outliers: in a ResNet basic block, ``conv1 -> bn1 -> ReLU -> conv2``, one
channel of bn1's output is multiplied by ``factor`` (its BN weight and bias) and conv2's weights reading
that channel are divided by it. ReLU commutes with a positive scale, so the block computes the same
function in exact arithmetic (FP32 rounding aside). Per-tensor activation quantization of the ReLU
output now has to span a range ``factor`` times wider: with max calibration every ordinary channel
rounds to zero, and conv2's per-output-channel weight scales round the shrunken weights of the outlier
channel to zero as well. Large-activation channels like these occur in real networks; here their
places are known, so a sensitivity ranking can be checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..export.onnx_export import ExportConfig, export_model
from ..models import create_model
from ..models.checkpoint import read_state_dict

SITES = ("layer1.0", "layer2.1")  # blocks whose bn1 output gets one outlier channel
FACTOR = 1000.0


@dataclass(frozen=True)
class OutlierModel:
    checkpoint: Path
    onnx: Path
    sites: tuple[str, ...]
    channels: dict[str, int]  # site -> the scaled channel
    tensors: tuple[str, ...]  # ONNX names of the planted ReLU outputs (what INT8 quantizes), in network order


def _busiest_channels(model: torch.nn.Module, sites: tuple[str, ...], images: torch.Tensor) -> dict[str, int]:
    """Per site, the channel with the largest mean ReLU(bn1) output: a channel that is really used."""
    found: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(f"{site}.bn1").register_forward_hook(
        lambda _m, _i, out, site=site: found.__setitem__(site, torch.relu(out).mean(dim=(0, 2, 3))))
        for site in sites]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return {site: int(found[site].argmax()) for site in sites}


def build_outlier_model(model_name: str, checkpoint: Path, imgsz: int, images: torch.Tensor, out_dir: Path,
                        sites: tuple[str, ...] = SITES, factor: float = FACTOR) -> OutlierModel:
    """Plant one outlier channel per site in a trained checkpoint, save it and export it to ONNX."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state, _ = read_state_dict(checkpoint)
    model = create_model(model_name, num_classes=state["fc.weight"].shape[0])
    model.load_state_dict(state)
    model.eval()
    channels = _busiest_channels(model, sites, images)
    with torch.no_grad():
        for site, c in channels.items():
            bn, conv = model.get_submodule(f"{site}.bn1"), model.get_submodule(f"{site}.conv2")
            bn.weight[c] *= factor
            bn.bias[c] *= factor
            conv.weight[:, c] /= factor
    planted = out_dir / f"{model_name}_outliers.pth.tar"
    torch.save({"state_dict": model.state_dict(), "arch": model_name}, planted)
    exported = export_model(ExportConfig(model=model_name, weights=str(planted), out_dir=str(out_dir / "onnx"),
                                         imgsz=imgsz))
    tensors = tuple(f"/{site.split('.')[0]}/{site}/relu/Relu_output_0" for site in sites)
    return OutlierModel(planted, exported.onnx_path, tuple(sites), channels, tensors)
