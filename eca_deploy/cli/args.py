"""Shared argument groups: each adds its flags to a command AND turns the parsed values into config fields.

One flag has one spelling, one meaning, one value check and one help text in every command that takes it
(the vocabulary table is in the README's "Command line" section). A command lists its groups, adds them to
its parser, and builds its stage config from ``fields(groups, args)`` plus its own few flags.

Adding a flag: put it in the group whose config it feeds (``add`` and ``fields`` side by side), give it a
type from this module so a bad value fails while parsing (exit 2, before any work), and every command using
the group gets it. A flag one command alone takes stays in that command's module. Renaming a flag: keep the
old spelling for one release with ``deprecated(parser, old, new, ...)``.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
import sys
from typing import Any, Callable, Iterable

from ..errors import EcaDeployError
from ..runtime.base import OpenOptions


# --- value types: raise ArgumentTypeError, so argparse reports "argument --flag: ..." and exits 2 ------------

def stage_rule(check: Callable[[str], Any], text: str) -> Any:
    """Run a stage's own validator (one rule, one place); its EcaDeployError becomes a usage error."""
    try:
        return check(text)
    except EcaDeployError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# The types below import their stage only when the flag is given: building the parser stays free of torch.

def opset(text: str) -> int:
    from ..export.onnx_export import check_opset

    return stage_rule(lambda t: check_opset(positive_int(t)), text)


def tolerance(text: str) -> tuple[str, float | None]:
    from ..runtime.harness.parity import parse_override

    return stage_rule(parse_override, text)


def trt_version(text: str) -> str:
    from ..runtime.tensorrt.compat import check_trtexec_version

    return stage_rule(check_trtexec_version, text)


def _number(text: str, convert, accept, expected: str):
    """``convert(text)`` where ``accept`` holds, else argparse's one-line error naming what was expected."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < float("inf"), "a positive number")


def count(text: str) -> int | None:
    """An image count, or 'all' (None)."""
    if text.strip().lower() == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got '{text}'") from None


def batch_sizes(text: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32), duplicates dropped, order kept."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas like 1,8,32, got '{text}'")
    return tuple(dict.fromkeys(sizes))


def image_size(text: str) -> int:
    from ..data.preprocess import MIN_IMAGE_SIZE  # not export/: that imports torch, which parity must not need

    value = positive_int(text)
    if value < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_IMAGE_SIZE}, got {value}")
    return value


# --- deprecated spellings -----------------------------------------------------------------------------------

class _Deprecated(argparse.Action):
    """An old spelling that still works for one release; it says so on stderr."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"eca-deploy: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def deprecated(parser, old: str, new: str, dest: str, type: Callable[[str], Any] | None = None) -> None:
    """``old`` sets ``dest`` as ``new`` does (hidden from --help, a warning when used)."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, type=type, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


# --- groups -------------------------------------------------------------------------------------------------

class Group(ABC):
    """Flags that several commands share; ``add`` puts them on a parser, ``fields`` maps them to config fields."""

    @abstractmethod
    def add(self, parser: argparse.ArgumentParser) -> None: ...

    @abstractmethod
    def fields(self, args: argparse.Namespace) -> dict[str, Any]: ...


def add_groups(parser: argparse.ArgumentParser, groups: Iterable[Group]) -> None:
    for group in groups:
        group.add(parser)


def fields(groups: Iterable[Group], args: argparse.Namespace) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for group in groups:
        merged.update(group.fields(args))
    return merged


class ModelArgs(Group):
    """--model, --weights -> model, weights (ExportConfig's model part)."""

    def add(self, parser):
        parser.add_argument("--model", required=True,
                            help="registered model name (see `eca-deploy models`) or timm:<name> for timm's ECA "
                                 "models (needs the timm extra)")
        parser.add_argument("--weights", default=None,
                            help="checkpoint: official .pth.tar, a bare state_dict, or .safetensors; ECA kernel sizes "
                                 "and class count are read from it (default: random init, which gives real timings "
                                 "but no meaningful accuracy)")

    def fields(self, args):
        return {"model": args.model, "weights": args.weights}


class SeedArgs(Group):
    """--seed -> seed."""

    def __init__(self, what: str):
        self.what = what

    def add(self, parser):
        parser.add_argument("--seed", type=int, default=0, help=f"seed of {self.what}")

    def fields(self, args):
        return {"seed": args.seed}


class DataArgs(Group):
    """--data, --count, --no-labels -> data, count, use_labels (the images parity compares on)."""

    def __init__(self, data_help: str):
        self.data_help = data_help

    def add(self, parser):
        parser.add_argument("--data", default=None, help=self.data_help)
        parser.add_argument("--count", type=count, default=None, metavar="N|all",
                            help="use this many images, picked with --seed, or 'all' (default: all; synthetic: 32)")
        parser.add_argument("--no-labels", dest="use_labels", action="store_false",
                            help="ignore the data's labels (when its classes are not the model's): judge INT8 by "
                                 "top-1 agreement instead of accuracy drop")

    def fields(self, args):
        return {"data": args.data, "count": args.count, "use_labels": args.use_labels}


class RuntimeArgs(Group):
    """--provider, --device, --threads, --ov-hint, --gpu (and --allow-host-code where the command runs engines
    it did not build) -> options: the OpenOptions every artifact is opened with."""

    def __init__(self, host_code: bool = True):
        self.host_code = host_code

    def add(self, parser):
        parser.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"],
                            help="onnxruntime execution provider for .onnx files (auto: cuda where installed, "
                                 "else cpu)")
        parser.add_argument("--device", default="auto",
                            help="torch device for torch:<model>: auto (cuda where available), cpu, cuda, cuda:1")
        parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                            help="inference threads: onnxruntime's intra-op pool, OpenVINO's INFERENCE_NUM_THREADS, "
                                 "and torch's while a torch:<model> runs (default: onnxruntime one per physical core, "
                                 "OpenVINO and torch their own defaults)")
        parser.add_argument("--ov-hint", default="latency", choices=["latency", "throughput"],
                            help="OpenVINO's PERFORMANCE_HINT for .xml and openvino:<file.onnx>: latency = one "
                                 "stream, all threads on each call (lowest ms per call); throughput = several "
                                 "streams, each batch split across them as parallel requests (more images/s at "
                                 "batch > 1)")
        parser.add_argument("--gpu", type=non_negative_int, default=0, metavar="N",
                            help="CUDA GPU index TensorRT engines run on (an engine built for another GPU model "
                                 "or compute capability is refused)")
        if self.host_code:
            parser.add_argument("--allow-host-code", action="store_true",
                                help="let TensorRT run host code stored in an engine (the lean runtime of a "
                                     "--versionCompatible plan, e.g. one trtexec built): only for engines you trust; "
                                     "never switched on by a manifest, which is as untrusted as the engine beside "
                                     "it")

    def build(self, args: argparse.Namespace) -> OpenOptions:
        return OpenOptions(provider=args.provider, device=args.device, threads=args.threads, ov_hint=args.ov_hint,
                           gpu=args.gpu, allow_host_code=args.allow_host_code if self.host_code else False)

    def fields(self, args):
        return {"options": self.build(args)}


class QdqArgs(Group):
    """--high-precision, --qdq-layout, --cpu-vnni -> high_precision, qdq_layout, cpu_vnni (INT8 layout per target)."""

    def add(self, parser):
        from ..calibration.qdq.placement import QDQ_LAYOUTS
        from ..calibration.fp16 import HIGH_PRECISIONS

        parser.add_argument("--high-precision", choices=HIGH_PRECISIONS, default=None,
                            help="INT8 for TensorRT: dtype of the layers left unquantized (ECA path, residual Adds, "
                                 "conv outputs feeding them), FP32 network inputs/outputs either way (default: fp16, "
                                 "as NVIDIA Model Optimizer's high_precision_dtype, opset 19; TensorRT 8.x needs "
                                 "fp32)")
        parser.add_argument("--qdq-layout", choices=QDQ_LAYOUTS, default="eca-deploy",
                            help="INT8 for TensorRT: where Q/DQ goes: eca-deploy's placement, or NVIDIA Model "
                                 "Optimizer's (also the ECA pool and gating Mul, both inputs of identity-block Adds, "
                                 "MaxPool and the final pool; classifier left float); build both, let `bench` decide")
        parser.add_argument("--cpu-vnni", action="store_true",
                            help="INT8 for the cpu target: the CPU it will run on has VNNI or AMX (Intel Ice Lake / "
                                 "Alder Lake and later, AMD Zen 4 and later; `eca-deploy doctor` shows this CPU's), so "
                                 "weights use all 8 bits. Without it they use 7 ([-63, 63]): onnxruntime's and "
                                 "OpenVINO's u8s8 kernels add u8 x s8 products in int16 on x86 CPUs without VNNI and "
                                 "saturate 8-bit weights, silently changing answers; 7-bit ones cannot saturate. "
                                 "Recorded in the manifest; `inspect` shows which a file assumes")

    def fields(self, args):
        return {"high_precision": args.high_precision, "qdq_layout": args.qdq_layout, "cpu_vnni": args.cpu_vnni}


TOLERANCE_FLAGS = {
    "atol": "absolute tolerance of the element check",
    "rtol": "relative tolerance of the element check (an element fails only when over atol AND rtol)",
    "max_top1_drop": "largest allowed top-1 drop in percentage points, counted from images the reference gets "
                     "right and the candidate wrong (where labels exist)",
    "min_agreement": "smallest allowed top-1 agreement with the reference, 0..1 (with or without labels)",
}


class ToleranceArgs(Group):
    """--atol, --rtol, --max-top1-drop, --min-agreement -> overrides {"atol": {"*": 1e-3, "fp16": None}, ...}."""

    def add(self, parser):
        group = parser.add_argument_group(
            "tolerances", "defaults per precision: fp32 at FP32's own error (4x the PyTorch reference's "
                          "float32-vs-float64 gap on 4 of the same inputs, at least 1e-5 of the logit scale; "
                          "atol=rtol=1e-3 against a non-PyTorch reference or where --atol/--rtol fp32 is given; a "
                          "TensorRT fp32 engine that may compute in TF32, on compute capability 8.0+ with TF32 left "
                          "on as trtexec does: as fp16); fp16 atol=1e-1, rtol=5e-2; int8 top-1 "
                          "agreement >= 0.97 and, with labels, top-1 drop <= 1 point counted from right-to-wrong "
                          "flips (both apply). Each flag takes VALUE (every precision), PRECISION=VALUE, or "
                          "PRECISION=off; repeat it for several precisions")
        for name, text in TOLERANCE_FLAGS.items():
            group.add_argument(f"--{name.replace('_', '-')}", dest=name, action="append", default=[], metavar="[P=]X",
                               type=tolerance, help=text)

    def fields(self, args):
        overrides: dict[str, dict] = {}
        for name in TOLERANCE_FLAGS:
            for precision, value in getattr(args, name):
                overrides.setdefault(name, {})[precision] = value
        return {"overrides": overrides}


class TimingArgs(Group):
    """--batch-sizes, --warmup, --iterations, --duration -> timing: a Timing (bench's and the pipeline's)."""

    def __init__(self, sizes: str):
        self.sizes = sizes

    def add(self, parser):
        parser.add_argument("--batch-sizes", dest="batches", type=batch_sizes, default=batch_sizes(self.sizes),
                            metavar="N[,N...]", help=f"batch sizes to time, comma-separated (default: {self.sizes})")
        deprecated(parser, "--batch", "--batch-sizes", "batches", batch_sizes)
        parser.add_argument("--warmup", type=non_negative_int, default=10,
                            help="untimed iterations before each batch size")
        parser.add_argument("--iterations", type=positive_int, default=None,
                            help="timed iterations per batch size (default: run for --duration seconds)")
        parser.add_argument("--duration", type=positive_float, default=3.0,
                            help="seconds of timed iterations per batch size when --iterations is not given")

    def build(self, args: argparse.Namespace):
        from ..runtime.harness.bench import Timing

        return Timing(batches=args.batches, warmup=args.warmup, iterations=args.iterations, duration=args.duration)

    def fields(self, args):
        return {"timing": self.build(args)}


class CalibrationArgs(Group):
    """--calib-data, --calib-count, --calib-method, (--calib-cache) -> the calibration fields of a stage config."""

    def __init__(self, methods: tuple[str, ...], method: str, count: int | None, data_help: str,
                 method_help: str, prefix: str = "", cache_help: str | None = None):
        self.methods, self.method, self.count = methods, method, count
        self.data_help, self.method_help, self.prefix, self.cache_help = data_help, method_help, prefix, cache_help

    def add(self, parser):
        parser.add_argument("--calib-data", default=None, metavar="SOURCE", help=self.prefix + self.data_help)
        parser.add_argument("--calib-count", type=count, default=self.count, metavar="N|all",
                            help=self.prefix + "calibration images drawn at random (with --seed), or 'all'"
                                 + (" (default: all)" if self.count is None else ""))
        parser.add_argument("--calib-method", choices=self.methods, default=self.method,
                            help=self.prefix + self.method_help)
        if self.cache_help:
            parser.add_argument("--calib-cache", default=None, metavar="FILE", help=self.prefix + self.cache_help)

    def fields(self, args):
        found = {"calib_data": args.calib_data, "calib_count": args.calib_count, "calib_method": args.calib_method}
        if self.cache_help:
            found["calib_cache"] = args.calib_cache
        return found


class OutputArgs(Group):
    """--output / -o -> the config's output field (a file or a folder, as the command says); --out is deprecated."""

    def __init__(self, field: str, help: str, default: str | None = None, old_out: bool = True):
        self.field, self.help, self.default, self.old_out = field, help, default, old_out

    def add(self, parser):
        parser.add_argument("-o", "--output", dest="output", default=self.default, metavar="PATH", help=self.help)
        if self.old_out:
            deprecated(parser, "--out", "--output", "output")

    def fields(self, args):
        return {self.field: args.output}


# data.pixels.INPUT_FORMATS' names, spelled here so building the parser imports no numpy (a test checks they agree)
INPUT_FORMAT_CHOICES = ("float-nchw", "uint8-nhwc")


def add_input_format(parser: argparse.ArgumentParser) -> None:
    """export's and pipeline's --input-format."""
    parser.add_argument("--input-format", default=INPUT_FORMAT_CHOICES[0], choices=INPUT_FORMAT_CHOICES,
                        help="float-nchw: the model takes float32 [N, 3, H, W] normalised images; uint8-nhwc: it "
                             "takes uint8 [N, H, W, 3] RGB pixels and does the cast, its own mean/std "
                             "normalisation and the layout change itself (recorded in the ONNX metadata)")
