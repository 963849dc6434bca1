"""PyTorch -> verified ONNX -> OpenVINO IR (.xml + .bin), the IR verified against PyTorch too.

The IR is converted from our simplified ONNX (``ov.convert_model``), so it keeps the plain Conv1d
ECA blocks. With ``fp16_weights`` the .bin stores half-float weights (``ov.save_model(...,
compress_to_fp16=True)``): half the size; the graph converts them back to f32 before use. The IR is
written to a temporary folder, compiled from there and checked against PyTorch, and only then
moved into place (.bin first, .xml last: the .xml is what a reader opens).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import (atomic_write, check_outputs, disk_full_error, free_bytes, manifest_path, package_versions,
                         read_manifest, sha256_file, staging_dir, weights_fields, write_artifact)
from ..errors import ExportError
from ..graph.compare import compare_outputs
from ..graph.openvino_session import import_openvino, ov_message, run_once
from ..models import LoadedModel, load_model
from .onnx_export import (ExportConfig, ExportResult, export_model, judge_fp32, rounding_gap_of, torch_logits,
                          verification_batch)

# FP16 weights, FP32 arithmetic: the same bar as quantize's FP16 check (worst-sample cosine to FP32).
# Random-init ECA-ResNet50 at 224 measured 0.99999; a broken conversion lands far below.
FP16_WEIGHTS_MIN_COSINE = 0.9999


@dataclass
class IrExportResult:
    xml_path: Path
    bin_path: Path
    manifest_path: Path
    precision: str  # "fp32", or "fp16" for FP16-compressed weights
    parity: dict
    onnx: ExportResult
    timings: dict = field(default_factory=dict)


def verify_ir(xml: Path, loaded: LoadedModel, cfg: ExportConfig, fp16_weights: bool) -> dict:
    """The IR's logits (compiled in f32, as the backend does) against PyTorch's on the export's batch."""
    batch = verification_batch(cfg.static_batch, cfg.imgsz, cfg.seed, loaded.data_config)
    reference = torch_logits(loaded.model, batch)
    out = run_once(xml, batch, "fp32")
    if not fp16_weights:
        return judge_fp32(out, reference, "OpenVINO IR", rounding_gap_of(loaded.model, batch, reference),
                          "OpenVINO IR")
    cmp = compare_outputs(reference, out)
    if not cmp.min_cosine >= FP16_WEIGHTS_MIN_COSINE:  # also catches NaN
        raise ExportError(f"OpenVINO IR with FP16 weights drifts from PyTorch: cosine {cmp.min_cosine:.6f} on the "
                          f"worst sample (limit {FP16_WEIGHTS_MIN_COSINE}); not written")
    return {"max_abs": cmp.max_abs, "min_cosine": cmp.min_cosine, "min_cosine_limit": FP16_WEIGHTS_MIN_COSINE,
            "top1_agreement": cmp.top1_agreement, "batch": int(out.shape[0])}


def ir_size_estimate(onnx_path: Path, fp16_weights: bool) -> int:
    """Bytes an IR of this ONNX needs: its weights (halved when stored in FP16) and the .xml."""
    size = onnx_path.stat().st_size
    return (size // 2 if fp16_weights else size) + (1 << 20)


def _move(source: Path):
    """An atomic_write callback that moves an already written file into the temporary path."""
    return lambda tmp: os.replace(source, tmp)


def export_openvino(cfg: ExportConfig, fp16_weights: bool = False, loaded: LoadedModel | None = None
                    ) -> IrExportResult:
    """Export and verify the ONNX (export_model), then convert it to a verified IR (write_ir)."""
    import_openvino()  # before minutes of export: a missing openvino fails first, in one line
    if loaded is None:
        loaded = load_model(cfg.model, cfg.weights, cfg.num_classes, seed=cfg.seed)
    return write_ir(export_model(cfg, loaded=loaded), loaded, cfg, fp16_weights)


def write_ir(onnx_result: ExportResult, loaded: LoadedModel, cfg: ExportConfig, fp16_weights: bool = False
             ) -> IrExportResult:
    """Convert an exported ONNX to IR beside it, verify the IR against PyTorch, write it with a manifest."""
    ov = import_openvino()
    t0 = time.perf_counter()
    precision = "fp16" if fp16_weights else "fp32"
    xml = onnx_result.onnx_path.with_name(onnx_result.onnx_path.stem + (".fp16" if fp16_weights else "") + ".xml")
    bin_path = xml.with_suffix(".bin")
    check_outputs([xml, bin_path, manifest_path(xml)], [cfg.weights, onnx_result.onnx_path])

    timings: dict[str, float] = {}
    with staging_dir(xml.parent, ".openvino-") as tmp:  # a killed run's folder is swept by a later one
        staged = tmp / "model.xml"
        t = time.perf_counter()
        try:
            model = ov.convert_model(str(onnx_result.onnx_path))
            ov.save_model(model, str(staged), compress_to_fp16=fp16_weights)
        except Exception as exc:  # OpenVINO raises plain RuntimeError with multi-line text
            needed, free = ir_size_estimate(onnx_result.onnx_path, fp16_weights), free_bytes(xml.parent)
            if free is not None and free < needed:  # OpenVINO says only "basic_ios::clear: iostream error"
                raise disk_full_error(bin_path, needed) from exc
            raise ExportError(f"OpenVINO could not convert {onnx_result.onnx_path.name}: "
                              f"{ov_message(exc)}") from exc
        timings["convert"] = time.perf_counter() - t
        t = time.perf_counter()
        parity = verify_ir(staged, loaded, cfg, fp16_weights)
        timings["verify"] = time.perf_counter() - t
        atomic_write(bin_path, _move(staged.with_suffix(".bin")))
        source = read_manifest(onnx_result.onnx_path) or {}
        manifest = write_artifact(
            xml, _move(staged), "export",
            format="openvino",
            precision=precision,
            weights_compression="fp16" if fp16_weights else None,
            inference_precision="f32",  # what it was verified in, and what the backend compiles it in
            bin={"artifact": bin_path.name, "sha256": sha256_file(bin_path), "size_bytes": bin_path.stat().st_size},
            source_onnx={"artifact": onnx_result.onnx_path.name, "sha256": source.get("sha256")},
            **{key: source.get(key) for key in ("model", "weights", "num_classes", "eca_k_per_stage",
                                                "eca_blocks", "input", "output", "dynamic_axes")},
            **weights_fields(source),
            parity={"openvino": parity},
            versions=package_versions("torch", "onnx", "openvino"),
        )
    timings["total"] = time.perf_counter() - t0
    return IrExportResult(xml, bin_path, manifest, precision, parity, onnx_result, timings)
