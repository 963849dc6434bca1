"""The one small interface every inference backend implements (Polygraphy's runner idea, trimmed).

A backend is opened on a model, takes batches in its input format (float32 NCHW, or uint8 NHWC pixels for a
model exported with ``--input-format uint8-nhwc``) and returns logits; comparators and
benchmarks only ever see this interface, so nothing above a backend asks what kind it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.pixels import FLOAT_NCHW, INPUT_FORMATS
from ..artifacts import manifest_path, verified_manifest
from ..errors import EcaDeployError, ManifestError, OnnxFileError, warn


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # None where the axis is dynamic (usually the batch)
    dtype: str = "float32"


def require_image_input(label: str, spec: InputSpec, input_format: str = FLOAT_NCHW) -> None:
    """Refuse, when a model is opened rather than mid-run, one whose input is not an image batch of the input
    format its metadata records (token ids, one channel, or metadata that does not match the graph): every
    backend's spec goes through here (registry.open_backend)."""
    if not INPUT_FORMATS[input_format].accepts(spec.dtype, spec.shape):
        shape = [d if isinstance(d, int) else "?" for d in spec.shape]
        expected = ("one float32 or float16 [N, 3, H, W] input" if input_format == FLOAT_NCHW
                    else f"one input of {INPUT_FORMATS[input_format].describe}, as its metadata records")
        raise OnnxFileError(f"{label} takes a {spec.dtype} {shape} input '{spec.name}'; eca-deploy runs image "
                            f"classifiers with {expected}")


DeviceRunner = tuple[Callable[[], float], str]  # (run() -> milliseconds, which clock measured them)


class Backend(ABC):
    """Open in the constructor, ``infer`` any number of times, ``close`` (or use it as a context manager)."""

    name: str  # e.g. "torch-cpu", "onnxruntime-cpu", "tensorrt"
    fp32_math: str = "fp32"  # "tf32" where FP32 convolutions run in TF32 (TensorRT on Ampere and newer)
    batch_range: tuple[int, int] | None = None  # an engine profile's (min, max) batch; None: any batch
    # what infer() is fed (data.pixels): set by registry.open_backend from the artifact's recorded format
    input_format: str = FLOAT_NCHW

    @property
    @abstractmethod
    def input_spec(self) -> InputSpec: ...

    @property
    def image_size(self) -> tuple[int | None, int | None]:
        """(height, width) of the input, read in the axes of its input format."""
        return INPUT_FORMATS[self.input_format].image_size(self.input_spec.shape)

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """A batch in ``input_format`` (float32 [N, 3, H, W] by default) -> float32 [N, classes] logits, on the
        host."""

    @abstractmethod
    def close(self) -> None: ...

    def batch_limits(self) -> tuple[int, int | None]:
        """(smallest, largest) batch this backend takes: a static batch axis, a profile, or (1, None)."""
        fixed = self.input_spec.shape[0]
        if isinstance(fixed, int):
            return fixed, fixed
        if self.batch_range:
            return int(self.batch_range[0]), int(self.batch_range[1])
        return 1, None

    def as_input(self, batch: np.ndarray, dtype) -> np.ndarray:
        """``batch`` as the C-contiguous ``dtype`` array the runtime takes, after refusing a batch of the other
        input format in one line (normalised floats cast to bytes would be garbage, not an error)."""
        INPUT_FORMATS[self.input_format].check_batch(batch, self.name)
        return np.ascontiguousarray(batch, dtype=dtype)

    def float64_logits(self, batch: np.ndarray) -> np.ndarray | None:
        """The same model's logits computed in float64, where this backend can (the PyTorch reference): the
        measure of FP32's own error on these inputs. None elsewhere."""
        return None

    def device_runner(self, batch: np.ndarray) -> DeviceRunner | None:
        """A runner that keeps ``batch`` and the outputs on the device, for device-side timing; None on a CPU."""
        return None

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class OpenOptions:
    """How an artifact is opened, whatever its kind: what the command line's runtime flags say (cli/args.py's
    RuntimeArgs builds it); each kind's opener reads the fields it has a use for."""

    provider: str = "auto"  # onnxruntime execution provider: auto / cpu / cuda / tensorrt (--provider)
    device: str = "auto"  # torch device for torch: references (--device)
    imgsz: int = 224  # torch only: the input size the model is traced at
    threads: int | None = None  # onnxruntime intra-op / OpenVINO threads, or torch's while the backend is open
    ov_hint: str = "latency"  # OpenVINO's performance hint: latency or throughput (--ov-hint)
    allow_host_code: bool = False  # engines: let TensorRT run code stored in them (--allow-host-code)
    gpu: int = 0  # engines: the CUDA GPU index they run on (--gpu)


def optional_manifest(path: Path) -> dict | None:
    """A file's manifest where it only adds its recorded precision (the file tells it too): a broken one is
    ignored, said in one line."""
    try:
        manifest = verified_manifest(path)  # a stale one (sha256 of other bytes) is ignored, said once
    except ManifestError as exc:
        warn(f"{exc}; ignored (the precision is read from the graph)")
        return None
    if manifest is not None and not isinstance(manifest.get("precision", ""), str):
        warn(f"manifest {manifest_path(path)} has a non-string \"precision\"; ignored")
        return None
    return manifest


def file_and_manifest(artifact) -> list[Path]:
    return [artifact.path, manifest_path(artifact.path)]


def recorded_layout(artifact) -> str:
    """An INT8 ONNX file's Q/DQ layout (tensorrt or cpu): its manifest's target, else what its graph holds."""
    import onnx

    from ..precisions import graph_layout

    target = (artifact.manifest or {}).get("target")
    return target if target else graph_layout(onnx.load(str(artifact.path), load_external_data=False)).split()[-1]


@dataclass(frozen=True)
class ArtifactKind:
    """One row of the artifact-kinds table (runtime/registry.py): everything in which one kind of artifact
    differs from another, so that nothing above the table asks which kind it holds. Each framework folder
    defines its row in its kind.py; a new backend is that folder and one entry in the table. The callables
    take the registry's Artifact (``Any`` here: the registry sits above this module)."""

    name: str  # saved references record it
    label: str  # the report's "format" column
    noun: str  # how messages name one file of it ("ONNX file")
    help: tuple[str, ...]  # how --help and errors name its specs ("a .onnx file")
    opener: Callable[[Any, OpenOptions], Backend]
    suffixes: tuple[str, ...] = ()  # file suffixes that select it
    prefix: str | None = None  # a spec prefix that selects it ("torch:")
    named: Callable[[str, str], dict] | None = None  # (spec, text after the prefix) -> the Artifact's fields
    not_found: type[EcaDeployError] = OnnxFileError  # the error for a named file that is missing
    manifest: Callable[[Path], dict | None] = optional_manifest  # reads (and checks) the manifest beside a file
    check: Callable[[Path], None] = lambda path: None  # what else a file of this kind needs (an IR its .bin)
    companions: tuple[str, ...] = ()  # suffixes of the files beside it that are part of it: counted in its size
    output_tag: str = ""  # added to the stem of a default output name, apart from an ONNX file's (an IR: ".ir")
    precision: Callable[[Any], tuple[str, str]] | None = None  # (precision, source) no manifest records
    inputs: Callable[[Any], list[Path]] = file_and_manifest  # every file running it reads
    int8_layout: Callable[[Any], str | None] = lambda artifact: None  # an INT8 artifact's Q/DQ layout
    input_format: Callable[[Any], str] = lambda artifact: FLOAT_NCHW  # what it is fed (data.pixels), as recorded
    remote: bool = False  # served elsewhere and timed from this client: concurrency levels, no power sampling
