"""Stand-ins for ``pycuda.driver`` and ``tensorrt`` that model only the documented behaviour our code relies on.

pycuda (inducer/pycuda src/cpp/cuda.hpp, class context):
- each thread has its own context stack (context_stack is thread-specific), so a context pushed on
  one thread is not current on another; ``Context.push()`` pushes the context it is called on;
- ``Context.pop()`` is *static*: it pops whatever is on top, and raises LogicError
  "cannot pop non-current context" when the stack is empty;
- ``detach()`` does not pop;
- allocations and streams need a current context (cuMemAlloc fails with "invalid device context");
- at module cleanup a non-empty stack aborts the interpreter ("context stack was not empty upon
  module cleanup"), played here by :meth:`FakeCuda.module_cleanup` raising.

TensorRT (Python API docs for IRuntime / ICudaEngine, developer guide "Version Compatibility"):
- ``Runtime.DLA_core`` starts at -1 and is read while deserializing;
- a version-compatible plan carrying its lean runtime deserializes only with
  ``engine_host_code_allowed = True`` (deserialize_cuda_engine returns None otherwise);
- ``create_execution_context()`` returns None when it cannot allocate (out of memory);
- I/O by tensor name (num_io_tensors, get_tensor_name, get_tensor_mode, ...).
The fake engine computes logits = per-image mean of the input times (1..classes), so results can be checked;
a plan reading ``ONNX:<path>`` (what fake_polygraphy.py builds) runs that ONNX in onnxruntime instead.
"""

from __future__ import annotations

import threading
import types

import numpy as np

VERSION_COMPATIBLE_PLAN = b"VC-LEAN-RUNTIME"  # plan bytes the fake treats as carrying host code
OOM_PLAN = b"NEEDS-TOO-MUCH-MEMORY"
ONNX_PLAN = b"ONNX:"  # + the path of the ONNX the engine runs
CLASSES = 4


class LogicError(RuntimeError):
    pass


class FakeCuda:
    """pycuda.driver with one device per (name, capability) in ``gpus`` and one context stack per thread."""

    LogicError = LogicError

    def __init__(self, name="Orin", capability=(8, 7), gpus=None):
        gpus = gpus or [(name, capability)]
        self.driver_version = 12060
        self.stacks: dict[int, list] = {}
        self.memory: dict[int, np.ndarray] = {}
        self.retained = 0
        fake = self

        class Context:
            def push(self):
                fake.stack.append(self)

            @staticmethod
            def pop():
                if not fake.stack:
                    raise LogicError("context::pop failed: invalid device context - cannot pop non-current context")
                fake.stack.pop()

            def detach(self):  # pycuda's detach releases, it does not pop
                pass

        class Device:
            def __init__(self, index):
                self.index = index

            @staticmethod
            def count():
                return len(gpus)

            def name(self):
                return gpus[self.index][0]

            def compute_capability(self):
                return gpus[self.index][1]

            def retain_primary_context(self):
                fake.retained += 1
                return Context()

        self.Context, self.Device = Context, Device

    @property
    def stack(self) -> list:
        """The calling thread's context stack."""
        return self.stacks.setdefault(threading.get_ident(), [])

    def init(self):
        pass

    def get_driver_version(self):
        return self.driver_version

    def _need_context(self, what):
        if not self.stack:
            raise LogicError(f"{what} failed: invalid device context")

    def mem_alloc(self, nbytes):
        self._need_context("cuMemAlloc")
        fake = self

        class Allocation:
            def __init__(self):
                self.data = np.zeros(nbytes, np.uint8)
                fake.memory[self.data.ctypes.data] = self.data

            def __int__(self):
                return self.data.ctypes.data

            def free(self):
                fake.memory.pop(self.data.ctypes.data, None)

        return Allocation()

    def Stream(self):  # noqa: N802 - pycuda's name
        self._need_context("cuStreamCreate")
        return types.SimpleNamespace(handle=1, synchronize=lambda: None)

    def Event(self):  # noqa: N802
        return types.SimpleNamespace(record=lambda stream=None: None, synchronize=lambda: None,
                                     time_till=lambda other: 1.0)

    @staticmethod
    def pagelocked_empty(shape, dtype):
        return np.empty(shape, dtype)

    def memset_d8(self, dest, value, count):
        dest.data[:count] = value

    def memcpy_htod_async(self, dest, src, stream=None):
        dest.data[:] = np.frombuffer(np.ascontiguousarray(src).tobytes(), np.uint8)

    memcpy_htod = memcpy_htod_async

    def memcpy_dtoh_async(self, dest, src, stream=None):
        np.copyto(dest, src.data.view(dest.dtype).reshape(dest.shape))

    def module_cleanup(self):
        """What pycuda does when its module is torn down at interpreter exit."""
        if self.stack:
            raise LogicError("context stack was not empty upon module cleanup: the program will be aborted now")


def fake_tensorrt(cuda: FakeCuda, version="10.3.0.30", dla_cores=0, builder_error=None):
    """A tensorrt module whose engines run on ``cuda``'s fake memory; its Builder only reports DLA cores
    (or raises ``builder_error``, as the bindings do when libnvinfer cannot start)."""
    trt = types.SimpleNamespace(__version__=version, loggers=[], runtimes=[])
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})
    trt.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (), {})
    trt.nptype = lambda dtype: np.float32

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            trt.loggers.append(self)

    class Engine:
        num_io_tensors = 2

        def __init__(self, dla_core, onnx_path=None):
            self.dla_core = dla_core  # the core this engine was placed on when deserialized
            self.oom = False
            self.onnx_path = onnx_path
            self.image, self.classes = (3, 8, 8), CLASSES
            if onnx_path:
                import onnx

                graph = onnx.load(onnx_path, load_external_data=False).graph
                self.image = tuple(d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:])
                self.classes = graph.output[0].type.tensor_type.shape.dim[1].dim_value

        def get_tensor_name(self, i):
            return ("input", "logits")[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "FLOAT"

        def get_tensor_shape(self, name):
            return (-1, *self.image) if name == "input" else (-1, self.classes)

        def get_tensor_profile_shape(self, name, index):
            return tuple((n, *self.image) for n in (1, 4, 8))

        def create_execution_context(self):
            return None if self.oom else ExecutionContext(self)

    class ExecutionContext:
        def __init__(self, engine):
            self.shape, self.addresses = None, {}
            self.onnx_path, self.classes = engine.onnx_path, engine.classes

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)

        def get_tensor_shape(self, name):
            return self.shape if name == "input" else (self.shape[0], self.classes)

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle):
            images = cuda.memory[self.addresses["input"]].view(np.float32).reshape(self.shape)
            if self.onnx_path:
                from eca_deploy.graph.session import run_once

                logits = run_once(self.onnx_path, images)
            else:
                logits = images.reshape(self.shape[0], -1).mean(1, keepdims=True) * np.arange(1, self.classes + 1)
            cuda.memory[self.addresses["logits"]].view(np.float32)[:] = logits.astype(np.float32).ravel()
            return True

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.DLA_core = -1
            self.engine_host_code_allowed = False
            trt.runtimes.append(self)

        def deserialize_cuda_engine(self, data):
            if data.startswith(VERSION_COMPATIBLE_PLAN) and not self.engine_host_code_allowed:
                return None
            engine = Engine(self.DLA_core, data[len(ONNX_PLAN):].decode() if data.startswith(ONNX_PLAN) else None)
            engine.oom = data.startswith(OOM_PLAN)
            return engine

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            if builder_error is not None:
                raise builder_error

    trt.Logger, trt.Runtime, trt.Builder = Logger, Runtime, Builder
    return trt
