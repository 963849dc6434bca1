"""Doc tests: a Python started with this folder on PYTHONPATH plays a Jetson-like machine (TensorRT 10.3, one GPU,
one DLA core) with the fakes of tests/runtime/tensorrt, so a page's `eca-deploy build` and TensorRT examples run
on a CPU machine. The fake engines run the ONNX they were built from in onnxruntime, so engines built by one
command run in the next.

Python imports a module named sitecustomize at start-up; this one swaps the one seam the TensorRT code imports
through (eca_deploy.runtime.tensorrt.env._import_module), as the TensorRT tests do.
"""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "runtime" / "tensorrt"))

from eca_deploy.runtime.tensorrt import env  # noqa: E402
from fake_polygraphy import FakePolygraphy, polygraphy_modules  # noqa: E402
from fake_tensorrt import FakeCuda, fake_tensorrt  # noqa: E402

_cuda = FakeCuda()
_modules = {"tensorrt": fake_tensorrt(_cuda, dla_cores=1), "pycuda.driver": _cuda,
            **polygraphy_modules(FakePolygraphy(dla_cores=1))}
env._import_module = _modules.__getitem__
