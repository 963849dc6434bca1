"""torch -> ONNX -> onnxsim, verified against PyTorch after every step.

We use the TorchScript exporter (``dynamo=False``): the dynamo exporter was several
times slower, failed on a batch-1 example with a dynamic batch axis, forced opset 18
and wrote weights to a separate ``.onnx.data`` file (figures: README, Performance).
Opset 17 is what TensorRT 8.6 (JetPack 6.0) parses fully.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from ..artifacts import (check_outputs, manifest_path, output_dir, package_versions, short_identity, source_weights,
                         weights_identity, write_artifact)
from ..data.preprocess import MIN_IMAGE_SIZE
from ..errors import ExportError, OutputError, first_line
from ..models import TIMM_PREFIX, LoadedModel, float64_logits, k_per_stage, load_model
from ..graph.compare import compare_outputs, rounding_check, rounding_gap
from ..precisions import PRECISIONS
from ..graph.session import run_once
from ..graph.graph import summarize
from ..data.preprocess import DataConfig
from ..data.synthetic import photo_like_batch
from ..data.pixels import FLOAT_NCHW, INPUT_FORMATS
from ..graph.input_format import record_input_format
from .input_format import example_input, exported_module, input_shape, verification_inputs
from .simplify import simplify

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# What torch 2.x's TorchScript exporter writes (its ONNX_MIN_OPSET .. ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET);
# outside it torch prints its whole IR before failing.
OPSETS = range(7, 21)


@dataclass
class ExportConfig:
    model: str
    weights: str | None = None
    out_dir: str | None = None  # default: artifacts/<model>/
    opset: int = 17
    static_batch: int | None = None  # None: dynamic batch axis
    imgsz: int = 224
    simplify: bool = True
    num_classes: int | None = None
    seed: int = 0  # random init (without weights) and the verification batch
    input_format: str = FLOAT_NCHW  # data.pixels: uint8-nhwc bakes the preprocessing into the graph


@dataclass
class ExportResult:
    onnx_path: Path
    manifest_path: Path
    parity: dict
    eca_blocks: list
    timings: dict = field(default_factory=dict)


def safe_name(model: str) -> str:
    return model.replace(TIMM_PREFIX, TIMM_PREFIX[:-1] + "_").replace("/", "_")


def verification_batch(batch: int | None, imgsz: int, seed: int, config: DataConfig) -> np.ndarray:
    """Seeded photo-like images (what the model will see, not noise it never will); batch 2 for a dynamic
    model so the batch axis is really exercised."""
    return photo_like_batch(batch or 2, imgsz, seed, config)


def torch_logits(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


def rounding_gap_of(model: torch.nn.Module, batch: np.ndarray, reference: np.ndarray) -> Callable[[], float]:
    """PyTorch's own float32-vs-float64 gap on ``batch`` (graph.compare.rounding_gap), computed once, when first
    needed (every check of one export shares it)."""
    return functools.cache(lambda: rounding_gap(reference, float64_logits(model, batch)))


def judge_fp32(out: np.ndarray, reference: np.ndarray, step: str, gap: Callable[[], float],
               what: str = "ONNX") -> dict:
    """Pass at FP32's own rounding error: the check parity and the pipeline apply to an FP32 candidate
    (graph.compare.rounding_check), with PyTorch's float64 run on the same batch as the measure."""
    check = rounding_check(PRECISIONS["fp32"].tolerance, reference, out, gap())
    if not check["value"] <= check["limit"]:  # also catches NaN
        raise ExportError(f"{step}: {what} output differs from PyTorch by {check['value']:.3g} of its logit scale "
                          f"(limit {check['limit']:.3g}: {check['limit_from']}); the graph is not faithful")
    cmp = compare_outputs(reference, out)
    return {"max_abs": cmp.max_abs, "error": check["value"], "limit": check["limit"],
            "limit_from": check["limit_from"], "cosine": cmp.cosine, "top1_agreement": cmp.top1_agreement,
            "batch": int(out.shape[0])}


def verify_fp32(onnx_model: onnx.ModelProto, reference: np.ndarray, batch: np.ndarray, step: str,
                gap: Callable[[], float]) -> dict:
    return judge_fp32(run_once(onnx_model, batch), reference, step, gap)


def check_opset(opset: int) -> int:
    if opset not in OPSETS:
        raise ExportError(f"--opset must be {OPSETS.start}..{OPSETS.stop - 1} (torch's TorchScript exporter), "
                          f"got {opset}")
    return opset


@contextlib.contextmanager
def _stdout_to_stderr():
    """The exporter's C++ side prints graphs straight to file descriptor 1; stdout is for our results."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def to_onnx(loaded: LoadedModel, opset: int, batch: int | None, imgsz: int,
            input_format: str = FLOAT_NCHW) -> onnx.ModelProto:
    example = example_input(input_format, batch or 1, imgsz)
    buffer = io.BytesIO()
    dynamic = None if batch else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    try:
        with warnings.catch_warnings(), _stdout_to_stderr():
            warnings.simplefilter("ignore")  # TorchScript exporter deprecation notices
            torch.onnx.export(exported_module(loaded.model, input_format, loaded.data_config), (example,), buffer,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed for {loaded.name} at opset {opset}: "
                          f"{first_line(exc)}") from exc
    model = onnx.load_from_string(buffer.getvalue())
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph fails onnx.checker: {first_line(exc)}") from exc
    return model


def export_model(cfg: ExportConfig, loaded: LoadedModel | None = None) -> ExportResult:
    """Export, verify, simplify, verify again, check the ECA shape, then write ONNX + manifest atomically."""
    check_opset(cfg.opset)
    if cfg.imgsz < MIN_IMAGE_SIZE:
        raise ExportError(f"--imgsz must be at least {MIN_IMAGE_SIZE}, got {cfg.imgsz}")
    if cfg.static_batch is not None and cfg.static_batch < 1:
        raise ExportError(f"--static-batch must be a positive integer, got {cfg.static_batch}")
    if cfg.input_format not in INPUT_FORMATS:
        raise ExportError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}, got {cfg.input_format}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if loaded is None:
        loaded = load_model(cfg.model, cfg.weights, cfg.num_classes, seed=cfg.seed)
    timings["load"] = time.perf_counter() - t0

    with output_dir(cfg.out_dir or Path("artifacts") / safe_name(cfg.model)) as out_dir:
        return _export_into(out_dir, cfg, loaded, timings, t0)


def _weights(loaded: LoadedModel, cfg: ExportConfig) -> dict:
    """The manifest's weights fields: the file's sha256, or the seed of the random init."""
    return {"weights_sha256": loaded.weights_sha256, "random_init_seed": None if loaded.weights else cfg.seed}


def check_same_weights(onnx_path: Path, weights: dict) -> None:
    """Refuse to replace an earlier export made from other weights: the quantized files, IRs and engines made from
    it would sit beside the new one and parity would compare unrelated models. Same weights: replaced as before."""
    earlier = weights_identity(source_weights(onnx_path))  # none, or an unreadable one: nothing to protect
    now = weights_identity(weights)
    if earlier and now and earlier != now:
        raise OutputError(f"{onnx_path} was made from other weights ({short_identity(earlier)}) than this run's "
                          f"({short_identity(now)}); give another --output folder, or delete that folder first")


def _export_into(out_dir: Path, cfg: ExportConfig, loaded: LoadedModel, timings: dict[str, float],
                 t0: float) -> ExportResult:
    onnx_path = out_dir / f"{safe_name(cfg.model)}.onnx"
    check_outputs([onnx_path, manifest_path(onnx_path)], [cfg.weights])
    check_same_weights(onnx_path, _weights(loaded, cfg))

    t = time.perf_counter()
    graph = to_onnx(loaded, cfg.opset, cfg.static_batch, cfg.imgsz, cfg.input_format)
    timings["export"] = time.perf_counter() - t

    feed, batch = verification_inputs(cfg.input_format,
                                      verification_batch(cfg.static_batch, cfg.imgsz, cfg.seed, loaded.data_config),
                                      loaded.data_config)
    reference = torch_logits(loaded.model, batch)
    gap = rounding_gap_of(loaded.model, batch, reference)
    t = time.perf_counter()
    parity = {"export": verify_fp32(graph, reference, feed, "after export", gap)}
    timings["verify_export"] = time.perf_counter() - t

    if cfg.simplify:
        t = time.perf_counter()
        graph = simplify(graph)
        timings["simplify"] = time.perf_counter() - t
        t = time.perf_counter()
        parity["simplify"] = verify_fp32(graph, reference, feed, "after onnxsim", gap)
        timings["verify_simplify"] = time.perf_counter() - t

    record_input_format(graph, cfg.input_format)  # after onnxsim, which rebuilds the model
    summary = summarize(graph)
    not_plain = [b for b in summary.eca_blocks if not b.plain]
    expected = len(loaded.eca_blocks)
    if len(summary.eca_blocks) != expected or not_plain:
        detail = not_plain[0].problem if not_plain else f"found {len(summary.eca_blocks)} of {expected} blocks"
        raise ExportError(f"ECA blocks did not export as plain 1-D convolutions: {detail}")

    t = time.perf_counter()
    manifest = write_artifact(
        onnx_path, graph.SerializeToString(), "export",
        model=loaded.name,
        weights=loaded.weights,
        **_weights(loaded, cfg),
        num_classes=loaded.num_classes,
        data_config=loaded.data_config.as_dict(),
        eca_k_per_stage=k_per_stage(loaded.model),
        eca_blocks=[{"module": n, "channels": c, "k": k} for n, c, k in loaded.eca_blocks],
        opset=cfg.opset,
        input={"name": INPUT_NAME, "shape": input_shape(cfg.input_format, cfg.static_batch or "batch", cfg.imgsz),
               "dtype": INPUT_FORMATS[cfg.input_format].dtype},
        input_format=cfg.input_format,
        output={"name": OUTPUT_NAME, "shape": [cfg.static_batch or "batch", loaded.num_classes]},
        dynamic_axes={} if cfg.static_batch else {INPUT_NAME: {"0": "batch"}, OUTPUT_NAME: {"0": "batch"}},
        simplified=cfg.simplify,
        op_histogram=dict(sorted(summary.ops.items())),
        parity=parity,
        versions=package_versions("torch", "onnx", "onnxsim", "onnxruntime"),
    )
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return ExportResult(onnx_path, manifest, parity, loaded.eca_blocks, timings)
