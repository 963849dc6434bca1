"""Read weights files safely and fit them to a model.

Accepted: the official ECA-Net release (``.pth.tar`` dict with ``state_dict``,
keys prefixed ``module.`` by DataParallel, plus ``arch``/``epoch``/``best_prec1``/
``optimizer``), timm training checkpoints (``state_dict``/``model``), a bare
state_dict, and safetensors. Pickles are opened with ``weights_only=True``:
a checkpoint is untrusted input.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..artifacts import require_file
from ..errors import CheckpointError, first_line

STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel, torch.compile


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _check_values(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], name: str) -> None:
    """Floating-point model tensors need finite floating-point weights: NaN/Inf or integer weights would
    surface later as a NaN parity failure that blames the exporter."""
    integer = [f"{k} {state[k].dtype}".replace("torch.", "") for k in own
               if own[k].is_floating_point() and not state[k].is_floating_point()]
    if integer:
        raise CheckpointError(f"weights {name} hold {len(integer)} integer tensors where the model has "
                              f"floating-point ones ({_summary(integer, 2)}); save the trained float weights")
    broken = [k for k in own if own[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if broken:
        raise CheckpointError(f"weights {name} hold NaN or infinite values in {len(broken)} tensors "
                              f"({_summary(broken)}); the checkpoint is broken (diverged training?)")


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (state_dict with wrapper prefixes removed, the checkpoint's other metadata)."""
    path = require_file(path, "weights file", CheckpointError)
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"weights file {path} is empty")
        safetensors = _looks_like_safetensors(path)
    except OSError as exc:  # e.g. PermissionError: nothing else can be tried on a file we cannot open
        raise CheckpointError(f"cannot read weights file {path}: {exc.strerror or first_line(exc)}") from exc

    if safetensors:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _strip_prefixes(load_file(str(path), device="cpu")), {"format": "safetensors"}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {first_line(exc)}") from exc

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notices on foreign bytes; failures still raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        if detail.startswith("GLOBAL"):
            raise CheckpointError(f"refused to load {path}: it holds a Python object ({detail}), and checkpoints "
                                  "are loaded with weights_only=True") from exc
        raise CheckpointError(f"{path} is not a PyTorch checkpoint that loads with weights_only=True "
                              f"({detail})") from exc
    except Exception as exc:  # the unpickler fails on foreign bytes with any of a dozen exception types
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): "
                              f"{first_line(exc)}") from exc

    meta: dict = {"format": "pytorch"}
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                meta.update({k: v for k, v in obj.items() if isinstance(v, (str, int, float)) and k != key})
                meta["container_key"] = key
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__
        keys = ", ".join(list(obj)[:5]) if isinstance(obj, Mapping) else ""
        raise CheckpointError(f"{path} holds no state_dict (found a {kind}{' with keys ' + keys if keys else ''})")
    return _strip_prefixes(dict(obj)), meta


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _unpickler_detail(exc: BaseException) -> str:
    """The informative part of torch's long weights-only message: "GLOBAL posix.system" or "Unsupported operand 87"."""
    text = str(exc)
    found = re.search(r"GLOBAL [\w.]+", text)
    if found:
        return found.group(0)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1).strip() if found else first_line(exc)


def _summary(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}{', ...' if len(keys) > limit else ''}"


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], model_name: str, path: str | Path,
                meta: Mapping | None = None) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key is one-line error.

    ``num_batches_tracked`` buffers may be absent (checkpoints older than PyTorch 0.4.1).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                 for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_summary(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_summary(unexpected)})")
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped ({_summary(misshaped, 2)})")
        arch = (meta or {}).get("arch")
        hint = f"; the checkpoint says arch '{arch}'" if arch else ""
        raise CheckpointError(f"weights {Path(path).name} do not fit {model_name}: {'; '.join(parts)}{hint}")
    _check_values(state, own, Path(path).name)
    model.load_state_dict(state, strict=False)
