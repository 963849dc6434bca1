"""A stand-in for ``polygraphy.backend.trt`` that plays a build the way Polygraphy 0.53 runs one, and records
what our builder hands each loader.

Every loader's arguments are first bound to the installed Polygraphy's own signature (for CreateConfig,
through the ``**kwargs`` it forwards to _CreateConfigCommon), so a wrong argument name fails here as it
would there. The build follows polygraphy/backend/trt/loader.py, EngineBytesFromNetwork.call_impl:
network loader -> (builder, network, parser), config(builder, network), then (here) calibration through
the Calibrator's data loader, as TensorRT would drive get_batch, and the cache written as
Calibrator.write_calibration_cache does (util.save_file to the ``cache`` path).
"""

from __future__ import annotations

import inspect
import types
from pathlib import Path

import numpy as np
import polygraphy.backend.trt as real
from fake_tensorrt import ONNX_PLAN
from trt_api_check import unaccepted

CACHE = b"TRT-100300-EntropyCalibration2\ninput: 3c010a14\n(Unnamed Layer* 0) [Convolution]_output: 3d8e6b2a\n"
OTHER_GPU_TIMING_CACHE = b"timing cache of another GPU"


class PolygraphyException(Exception):
    """polygraphy.exception.PolygraphyException: what G_LOGGER.critical raises."""


def check_arguments(name: str, *args, **kwargs) -> None:
    """TypeError unless the installed Polygraphy's ``name`` accepts these arguments."""
    target = getattr(real, name)
    if inspect.isclass(target):
        inspect.signature(target).bind_partial(*args)
    wrong = unaccepted(target, args, kwargs)
    if wrong:
        raise TypeError(f"{name} takes no argument(s) {sorted(wrong)}")


class TimingCache:
    """ITimingCache: combine(other, ignore_mismatch) merges entries unless they come from another device."""

    def __init__(self, entries, device="this GPU"):
        self.entries, self.device = set(entries), device
        self.combined_with = []

    def combine(self, other, ignore_mismatch):
        self.combined_with.append(ignore_mismatch)
        if other.device != self.device and not ignore_mismatch:
            return False
        self.entries |= other.entries
        return True

    def serialize(self):
        return "\n".join(sorted(self.entries)).encode()


class Config:
    """IBuilderConfig: what CreateConfig leaves (DLA_core 0 when use_dla) and the timing cache calls."""

    def __init__(self, kwargs, layers_on_dla):
        self.kwargs = kwargs
        self.DLA_core = 0 if kwargs.get("use_dla") else -1
        self._layers_on_dla = layers_on_dla
        self.timing_cache = TimingCache([])

    def create_timing_cache(self, data):
        if data == OTHER_GPU_TIMING_CACHE:
            return TimingCache(["other:tactic"], device="another GPU")
        return TimingCache([line for line in data.decode().split("\n") if line])

    def set_timing_cache(self, cache, ignore_mismatch):
        if cache.device != "this GPU" and not ignore_mismatch:
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        self.timing_cache.entries.add("conv:tactic-built-now")
        return self.timing_cache

    def can_run_on_DLA(self, layer):  # noqa: N802 - TensorRT's name
        return layer in self._layers_on_dla


class FakePolygraphy:
    """polygraphy.backend.trt for one build; ``calls`` maps each loader to the keyword arguments it got."""

    def __init__(self, dla_cores=0, write_cache=True, fail=None, layers=("conv", "relu", "topk"),
                 layers_on_dla=("conv", "relu")):
        self.calls: dict[str, dict] = {}
        self.dla_cores, self.write_cache, self.fail = dla_cores, write_cache, fail
        self.layers, self.layers_on_dla = list(layers), set(layers_on_dla)
        self.batches: list[np.ndarray] = []
        self.config: Config | None = None
        self.logger = types.SimpleNamespace(name="Polygraphy's TensorRT logger")

    def get_trt_logger(self):
        check_arguments("get_trt_logger")
        return self.logger

    def _record(self, name, *args, **kwargs):
        check_arguments(name, *args, **kwargs)
        self.calls[name] = dict(kwargs, _args=args)

    def NetworkFromOnnxPath(self, path, **kwargs):  # noqa: N802 - Polygraphy's names
        self._record("NetworkFromOnnxPath", path, **kwargs)
        builder = types.SimpleNamespace(num_DLA_cores=self.dla_cores)
        network = types.SimpleNamespace(num_layers=len(self.layers), get_layer=lambda i: self.layers[i])
        return lambda: (builder, network, None)

    def Profile(self):  # noqa: N802
        check_arguments("Profile")
        fake = self

        class Profile(dict):
            def add(self, name, min, opt, max):  # noqa: A002 - Polygraphy's parameter names
                self[name] = (tuple(min), tuple(opt), tuple(max))
                fake.calls.setdefault("profiles", []).append(self)
                return self

        return Profile()

    def Calibrator(self, data_loader, **kwargs):  # noqa: N802
        self._record("Calibrator", data_loader, **kwargs)
        return types.SimpleNamespace(data_loader=data_loader, cache=kwargs.get("cache"),
                                     base=kwargs.get("BaseClass"), free=lambda: None)

    def CreateConfig(self, **kwargs):  # noqa: N802
        self._record("CreateConfig", **kwargs)

        def create(builder, network):
            self.config = Config(kwargs, self.layers_on_dla)
            return self.config

        return create

    def EngineBytesFromNetwork(self, network, config=None, **kwargs):  # noqa: N802
        self._record("EngineBytesFromNetwork", network, config=config, **kwargs)

        def build():
            builder, net, _ = network()
            path = self.calls["NetworkFromOnnxPath"]["_args"][0]
            built_config = config(builder, net)
            if self.fail:
                raise PolygraphyException(f"{self.fail}\nsee the log above")
            calibrator = built_config.kwargs.get("calibrator")
            if calibrator is not None:
                self._calibrate(calibrator)
            return ONNX_PLAN + path.encode()  # fake_tensorrt's engines run this ONNX in onnxruntime

        return build

    def _calibrate(self, calibrator):
        """TensorRT reads the cache first; without one it asks for batches until None, then writes the cache."""
        cache = Path(calibrator.cache)
        if cache.is_file() and cache.stat().st_size:
            return
        for batch in calibrator.data_loader:
            self.batches.append(next(iter(batch.values())))
        if self.batches and self.write_cache:
            cache.write_bytes(CACHE)


def polygraphy_modules(poly: FakePolygraphy | None = None) -> dict:
    """The modules env.import_polygraphy imports, played by ``poly`` (a fresh FakePolygraphy by default)."""
    return {"polygraphy.backend.trt": poly or FakePolygraphy(),
            "polygraphy.exception": types.SimpleNamespace(PolygraphyException=PolygraphyException),
            "polygraphy.logger": types.SimpleNamespace(G_LOGGER=types.SimpleNamespace(WARNING=30,
                                                                                      module_severity=20))}
