"""``eca-deploy serve``: one opened backend behind a real Triton Inference Server, the one PyTriton runs.

PyTriton (nvidia-pytriton) ships tritonserver and its Python backend; a request goes client -> tritonserver
(dynamic batcher) -> the Python-backend stub -> this process, where the backend's ``infer`` runs. What this
module adds to PyTriton is what we measured it needs on our machines:

- the stub embeds the interpreter's libpython; where python3 is not the system's Python (pyenv, a built
  Python), it loads the system's instead unless the interpreter's own lib folder leads LD_LIBRARY_PATH,
  and fails (``'_thread.RLock' object has no attribute '_recursion_count'``, or no numpy at all);
- the stubs of nvidia-pytriton 0.7 are built with a pybind11 that predates numpy 2: under numpy 2 they hand
  over zero-filled inputs and empty outputs without an error, so numpy 2 is refused up front;
- tritonserver can exit before a stub has finished unloading (exit timeout): the stub, reparented away from
  us, lives on with its shared memory; ``reap_stubs`` ends the stubs that carry this process's region name;
- PyTriton runs a copy of tritonserver whose RPATH no longer reaches the bundled libraries, so it names their
  folder on LD_LIBRARY_PATH, guessed from ``site.getsitepackages()`` (pytriton/utils/distribution.py,
  get_libs_path, 0.7.0): a pytriton seen through a .pth file or PYTHONPATH (a venv on top of another
  environment) is taken for an editable install, and tritonserver dies on a missing libcudart, which PyTriton
  reports only after its 120 s start-up timeout. ``server_env`` names the folder that is there;
  ``require_runnable_server`` runs the binary once, so a loader failure (a glibc older than the wheel's) is
  said at once;
- any other exit of tritonserver while it starts also waits out that timeout: ``exit_watch`` ends the wait
  within a second of the server's process being gone;
- PyTriton's client waits on gevent's hub, which prints a Ctrl-C as a traceback: ``_quiet_hub_interrupts``.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import EcaDeployError, MissingDependencyError, first_line, missing_dependency
from ..base import Backend
from .client import SERVE_INSTALL

EXIT_TIMEOUT_S = 5  # tritonserver's wait for in-flight requests on stop (its default, 30 s, delays every Ctrl-C)
STUB_GRACE_S = 3.0  # how long a stub gets to finish on its own after the server stopped
STUB = "triton_python_backend_stub"
SHM_ROOT = Path("/dev/shm")
LOADER_FAILED = 127  # the exit status of a program the dynamic loader could not start
WATCH_SIGNAL = signal.SIGUSR1  # whose handler exit_watch runs in the main thread
# Error lines tritonserver 2.51 logs on every start without a GPU, measured here: never the reason it failed.
ROUTINE_ERRORS = ("CudaDriverHelper has not been initialized",
                  "Failed to set config modification time: model_config_content_name_ is empty")
DEFAULT_MAX_BATCH = 8  # the dynamic batcher's largest batch where the model sets no limit


@dataclass(frozen=True)
class ServeConfig:
    name: str  # the model's name on the server
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    max_batch_size: int | None = None  # None: the backend's largest batch, at most DEFAULT_MAX_BATCH



def require_pytriton() -> None:
    """PyTriton importable and a numpy its Python-backend stub reads correctly, or one line saying what to do."""
    try:
        import pytriton.triton  # noqa: F401
    except ImportError:
        raise missing_dependency("nvidia-pytriton (the Triton server `serve` runs)", SERVE_INSTALL) from None
    if int(np.__version__.split(".")[0]) >= 2:
        raise MissingDependencyError(
            f"serve needs numpy<2 here (this Python has numpy {np.__version__}): the Triton Python-backend stub "
            "that nvidia-pytriton 0.7 ships is built for numpy 1 and passes zero-filled tensors under numpy 2; "
            f'{SERVE_INSTALL} in a fresh environment installs a numpy it reads')


def server_env(environ: dict, pytriton_root: Path) -> dict:
    """``environ`` for tritonserver and its stub: this interpreter's lib folder first on LD_LIBRARY_PATH, so the
    stub embeds the same libpython as the Python that serves, then the libraries bundled with the pytriton
    package at ``pytriton_root`` (see the module docstring). Each is added once, however often it is called."""
    paths = [p for p in environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and Path(libdir).is_dir() and libdir not in paths[:1]:
        paths.insert(0, libdir)
    bundled = [pytriton_root.parent / "nvidia_pytriton.libs", pytriton_root / "tritonserver" / "external_libs"]
    paths += [str(d) for d in bundled if d.is_dir() and str(d) not in paths]  # a wheel's, an editable checkout's
    return {**environ, "LD_LIBRARY_PATH": ":".join(paths)} if paths else dict(environ)


def require_runnable_server(binary: Path, env: dict) -> None:
    """``tritonserver --help`` runs under ``env``, or one line saying why it cannot start (its loader's words)."""
    try:
        done = subprocess.run([str(binary), "--help"], env=env, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EcaDeployError(f"tritonserver ({binary}) cannot run here: {first_line(exc)}") from None
    if done.returncode == LOADER_FAILED:
        said = next((line.strip() for line in done.stderr.splitlines() if line.strip()), "no message")
        raise MissingDependencyError(f"tritonserver cannot start here ({said}): nvidia-pytriton's wheel needs "
                                     f"glibc 2.35 or newer (manylinux_2_35) and its bundled libraries; {SERVE_INSTALL}")


def batch_limit(backend: Backend, asked: int | None) -> int:
    """The server's max_batch_size: what the user asked, within what the backend takes."""
    low, high = backend.batch_limits()
    if low == high:  # a static batch axis: the batcher may only ever hand over that many
        if low != 1:
            raise EcaDeployError(f"the model has a static batch of {low}; serve needs batch 1 or a dynamic batch "
                                 "axis (export with a dynamic batch)")
        if asked not in (None, 1):
            raise EcaDeployError(f"the model has a static batch of 1; --max-batch-size {asked} needs a dynamic "
                                 "batch axis")
        return 1
    if asked is not None and high is not None and asked > high:
        raise EcaDeployError(f"--max-batch-size {asked} is above what the model takes ({high})")
    return asked if asked is not None else min(high or DEFAULT_MAX_BATCH, DEFAULT_MAX_BATCH)


def require_free_ports(cfg: ServeConfig) -> None:
    """Each port free on the host, said at once: a taken one makes tritonserver exit, which PyTriton only
    reports after its start-up timeout (measured: 73 s, with a client traceback)."""
    for flag, port in (("--http-port", cfg.http_port), ("--grpc-port", cfg.grpc_port)):
        try:
            family = socket.getaddrinfo(cfg.host, port, type=socket.SOCK_STREAM)[0][0]
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
                sock.bind((cfg.host, port))
        except OSError as exc:
            raise EcaDeployError(f"cannot listen on {cfg.host}:{port} ({flag}): {first_line(exc)}") from None


def serve(backend: Backend, cfg: ServeConfig, announce=print) -> float:
    """Serve ``backend`` until Ctrl-C or SIGTERM; returns the seconds it took the server to become ready."""
    require_pytriton()
    require_free_ports(cfg)
    import pytriton
    from pytriton.triton import Triton, TritonConfig

    start = time.perf_counter()
    root = Path(pytriton.__file__).parent
    os.environ.update(server_env(dict(os.environ), root))  # PyTriton starts tritonserver with a copy of it
    require_runnable_server(root / "tritonserver" / "bin" / "tritonserver", dict(os.environ))
    stops: list[int] = []
    with tempfile.TemporaryDirectory(prefix="eca-deploy-triton-") as work, _stop_signals(stops):
        log = Path(work) / "tritonserver.log"
        config = TritonConfig(http_address=cfg.host, http_port=cfg.http_port, grpc_address=cfg.host,
                              grpc_port=cfg.grpc_port, allow_metrics=False, exit_timeout_secs=EXIT_TIMEOUT_S,
                              log_file=log)
        triton = Triton(config=config, workspace=Path(work) / "workspace")
        try:
            max_batch = _bind(triton, backend, cfg)
            try:
                _quiet_hub_interrupts()
                with exit_watch(Path(work) / "workspace" / "tritonserver" / "bin" / "tritonserver"):
                    triton.run()
            except ServerExited:
                said = _last_error(log) or "no error logged"
                raise EcaDeployError(f"Triton did not start: tritonserver exited ({said})") from None
            except Exception as exc:  # the server never answered: its log says why
                raise EcaDeployError(f"Triton did not start: {_last_error(log) or first_line(exc)}") from None
            ready = time.perf_counter() - start
            announce(f"serving {cfg.name} (max batch {max_batch}, dynamic batching) at http://{cfg.host}:"
                     f"{cfg.http_port} and grpc {cfg.host}:{cfg.grpc_port}; ready in {ready:.1f} s; "
                     "Ctrl-C stops")
            triton.serve()  # returns after Ctrl-C (it stops the server itself) or when the server died
            if not stops:
                raise EcaDeployError(f"the Triton server stopped by itself: {_last_error(log) or 'no error logged'}")
            return ready
        finally:
            triton.stop()
            reap_stubs(f"pytrtion{os.getpid()}-")  # PyTriton's region names: its spelling, this pid


def _quiet_hub_interrupts() -> None:
    """PyTriton waits for the server through tritonclient.http, whose requests run on gevent's hub: a Ctrl-C
    that lands there is printed by the hub as a traceback before it reaches us (measured: Ctrl-C 2 s into a
    start). Listed among the hub's NOT_ERROR, it is still raised here, where the CLI says it in one line."""
    try:
        from gevent import get_hub
    except ImportError:  # no gevent, no hub to print
        return
    hub = get_hub()  # this thread's, the one PyTriton's client uses
    if not issubclass(KeyboardInterrupt, hub.NOT_ERROR):
        hub.NOT_ERROR = (*hub.NOT_ERROR, KeyboardInterrupt)


class ServerExited(BaseException):
    """The watched tritonserver exited before the block it was watched in ended. A BaseException, like the
    KeyboardInterrupt it stands beside: PyTriton's readiness check logs and re-raises any Exception."""


@contextlib.contextmanager
def exit_watch(binary: Path, poll_s: float = 0.05):
    """Within the block, a process of ``binary`` that started and then exited raises ServerExited in this
    (the main) thread. PyTriton notices such an exit during start-up only after its 120 s timeout: its exit
    callback waits for the lock its readiness wait holds (pytriton/triton.py, connect and
    _on_tritonserver_exit, 0.7.0). A loader failure exits before it can be seen: require_runnable_server
    says those first.

    No signal reaches the process: interrupt_main runs the handler in the main thread between two bytecodes,
    and does nothing once the handler is gone. PyTriton's readiness loop sleeps at most 1 s at a time, so that
    is the most the wait goes on."""
    if sys.version_info < (3, 10):  # interrupt_main takes a signal from 3.10 on; without one it is a Ctrl-C
        yield
        return
    exited = threading.Event()
    done = threading.Event()
    program = str(binary).encode()

    def watch():
        seen = False
        while not done.wait(poll_s):
            running = any(_alive(pid) for pid in _processes(lambda argv: argv[0] == program))
            if seen and not running:
                exited.set()
                _thread.interrupt_main(WATCH_SIGNAL)
                return
            seen = seen or running

    def handler(signum, frame):
        if exited.is_set():
            raise ServerExited

    previous = signal.signal(WATCH_SIGNAL, handler)
    watcher = threading.Thread(target=watch, name="tritonserver-exit-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.signal(WATCH_SIGNAL, previous)


def _bind(triton, backend: Backend, cfg: ServeConfig) -> int:
    """The backend's infer as the server's model, batched by Triton's dynamic batcher; returns its max batch."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    max_batch = batch_limit(backend, cfg.max_batch_size)
    spec = backend.input_spec
    if None in spec.shape[1:]:
        raise EcaDeployError(f"the model's input '{spec.name}' has no fixed size; serve needs one [N, 3, H, W]")
    probe = np.zeros((1, *spec.shape[1:]), dtype=np.float32)
    classes = backend.infer(probe).shape[-1]  # the output's width, which the server's config must state

    @batch
    def infer(**inputs):
        return {"logits": backend.infer(inputs[spec.name])}

    triton.bind(cfg.name, infer, inputs=[Tensor(name=spec.name, dtype=np.float32, shape=tuple(spec.shape[1:]))],
                outputs=[Tensor(name="logits", dtype=np.float32, shape=(classes,))],
                config=ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher()))
    return max_batch


@contextlib.contextmanager
def _stop_signals(stops: list[int]):
    """Ctrl-C and SIGTERM (`kill`) both end serving, as the KeyboardInterrupt PyTriton's loop stops on; each
    is noted in ``stops``, which tells a requested stop from a server that died."""
    def handler(signum, frame):
        stops.append(signum)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


def _last_error(log: Path) -> str | None:
    """tritonserver's last error line (E... file:line] "message") that is not ROUTINE_ERRORS, message only; a
    Python traceback in it (escaped newlines) shortened to its first line and the exception it ends with."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.split("] ", 1)[-1].strip().strip('"') for line in lines if line.startswith("E")]
    errors = [e for e in errors if not e.startswith(ROUTINE_ERRORS)]
    if not errors:
        return None
    parts = [part.strip() for part in errors[-1].replace('\\"', '"').split("\\n") if part.strip()]
    parts = parts[:parts.index("At:")] if "At:" in parts[1:] else parts  # the Python backend's stub frames
    head = parts[0].replace("Traceback (most recent call last):", "").strip()
    return (head if len(parts) == 1 else f"{head} ... {parts[-1]}")[:400]


def reap_stubs(prefix: str, grace: float = STUB_GRACE_S) -> list[int]:
    """End the Python-backend stubs still running with shared-memory regions named ``prefix``... (ours only:
    the name carries this process's id), then remove those regions. Returns the stubs' process ids."""
    stubs = _stubs(prefix)
    deadline = time.monotonic() + grace
    while stubs and time.monotonic() < deadline:
        time.sleep(0.1)
        stubs = [pid for pid in stubs if _alive(pid)]
    for pid in stubs:
        try:
            os.kill(pid, signal.SIGKILL)  # it ignores SIGTERM while it waits on a server that is gone
        except ProcessLookupError:
            pass
    for region in SHM_ROOT.glob(f"{prefix}*") if SHM_ROOT.is_dir() else ():
        region.unlink(missing_ok=True)
    return stubs


def _stubs(prefix: str) -> list[int]:
    stub, region = STUB.encode(), prefix.encode()
    return _processes(lambda argv: argv[0].endswith(stub) and any(a.startswith(region) for a in argv[1:]))


def _processes(match) -> list[int]:
    """Ids of the processes whose argv (a list of bytes) ``match`` accepts."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if match(argv):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
