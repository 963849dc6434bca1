"""The Triton client and `serve` without a server: URLs, one-line errors, batch limits, stub reaping."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import types
from pathlib import Path

import numpy as np
import pytest

from eca_deploy.cli.main import main
from eca_deploy.errors import EcaDeployError, MissingDependencyError, UsageError
from eca_deploy.runtime.registry import open_backend, parse_spec
from eca_deploy.runtime.harness.doctor import tiny_eca_onnx
from eca_deploy.runtime.triton import server
from eca_deploy.runtime.triton.client import TritonUrl, parse_url


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_eca_onnx(tmp_path_factory.mktemp("triton") / "tiny.onnx")


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_url_parts_and_the_spec_it_names():
    assert parse_url("triton://127.0.0.1:8000/eca_resnet18") == TritonUrl("127.0.0.1", 8000, "eca_resnet18")
    assert parse_url("triton://[::1]:8000/m.v2") == TritonUrl("[::1]", 8000, "m.v2")
    artifact = parse_spec("triton://localhost:8000/m")
    assert (artifact.kind, artifact.label, artifact.format, artifact.inputs) == (
        "triton", "triton://localhost:8000/m (Triton)", "Triton", [])


@pytest.mark.parametrize("spec", ["triton://", "triton://host/model", "triton://host:0/m", "triton://host:70000/m",
                                  "triton://host:80/../../etc/passwd", "triton://host:80/m?x=1", "triton://a b:80/m",
                                  "triton://host:80/" + "m" * 200, "triton://h\x1b[31m:80/m"])
def test_a_malformed_url_is_a_usage_error_that_shows_the_form(spec, capsys):
    assert main(["bench", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "triton://HOST:PORT/MODEL" in err and "\x1b" not in err
    assert "Traceback" not in err


def test_an_unreachable_server_is_one_line(capsys):
    port = closed_port()
    assert main(["bench", f"triton://127.0.0.1:{port}/m", "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eca-deploy: error: cannot reach the Triton server at 127.0.0.1:{port}")
    assert err.count("\n") == 1


def test_concurrency_is_for_a_triton_server(tiny, capsys):
    assert main(["bench", str(tiny), "--concurrency", "1,2", "--iterations", "1"]) == 2
    assert "--concurrency measures a Triton server" in capsys.readouterr().err
    assert main(["bench", "triton://127.0.0.1:1/m", "--concurrency", "0"]) == 2
    assert main(["bench", "triton://127.0.0.1:1/m", "--concurrency", "1,9999"]) == 2
    assert "at most 256" in capsys.readouterr().err


def test_serve_refuses_what_its_triton_cannot_run(tiny, monkeypatch, capsys):
    """Without pytriton: the install line. With numpy 2: why not, before a server starts and hands the model
    zeros (measured: nvidia-pytriton 0.7's stubs are built with a pybind11 older than numpy 2)."""
    monkeypatch.setitem(sys.modules, "pytriton", None)
    monkeypatch.setitem(sys.modules, "pytriton.triton", None)
    assert main(["serve", str(tiny)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "eca-deploy[serve]"' in err
    for name in ("pytriton", "pytriton.triton"):  # installed, as far as the import can tell
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(np, "__version__", "2.0.0")
    with pytest.raises(MissingDependencyError, match="numpy<2"):
        server.require_pytriton()
    monkeypatch.setattr(np, "__version__", "1.26.4")
    server.require_pytriton()


def test_serve_usage_errors(tiny, capsys):
    assert main(["serve", str(tiny), "--http-port", "8000", "--grpc-port", "8000"]) == 2
    assert main(["serve", str(tiny), "--http-port", "70000"]) == 2
    assert main(["serve", str(tiny), "--name", "../x"]) == 2
    assert main(["serve", "triton://127.0.0.1:8000/m"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and all(line.startswith("eca-deploy: error: ") for line in lines)


def test_the_model_name_comes_from_the_file_name_as_the_triton_repository_names_it(tiny, tmp_path, monkeypatch):
    from eca_deploy.cli.serve import model_name
    from eca_deploy.packaging.triton import default_name
    from eca_deploy.runtime.registry import parse_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a").mkdir(parents=True)
    for name in ("eca resnet18.int8.onnx", "a/model.onnx"):
        (tmp_path / "runs" / name).write_bytes(tiny.read_bytes())
    (tmp_path / "w.pth").write_bytes(b"")
    expected = {"runs/eca resnet18.int8.onnx": "eca_resnet18_int8", "openvino:runs/a/model.onnx": "model",
                "torch:eca_resnet18:w.pth": "eca_resnet18", "torch:timm:ecaresnet26t": "ecaresnet26t"}
    for spec, name in expected.items():
        artifact = parse_spec(spec)
        assert model_name(artifact, None) == default_name(artifact) == name, spec
    artifact = parse_spec("runs/a/model.onnx")
    assert model_name(artifact, "eca.r18-v2") == "eca.r18-v2"
    for bad in ("", ".hidden", "../x", "a" * 65, "é"):
        with pytest.raises(UsageError, match="cannot be a Triton model name"):
            model_name(artifact, bad)


def test_max_batch_size_stays_within_what_the_model_takes(tiny):
    with open_backend(str(tiny), provider="cpu", threads=1) as backend:  # a dynamic batch axis
        assert server.batch_limit(backend, None) == server.DEFAULT_MAX_BATCH
        assert server.batch_limit(backend, 32) == 32
        backend.batch_range = (1, 4)  # as an engine's profile would
        assert server.batch_limit(backend, None) == 4
        with pytest.raises(EcaDeployError, match="above what the model takes"):
            server.batch_limit(backend, 5)


def test_the_server_gets_this_interpreters_libpython_and_the_libraries_beside_pytriton(tmp_path):
    libdir = sysconfig.get_config_var("LIBDIR")
    root = tmp_path / "site" / "pytriton"  # a wheel's layout, wherever its site folder is
    (tmp_path / "site" / "nvidia_pytriton.libs").mkdir(parents=True)
    root.mkdir()
    env = server.server_env({"LD_LIBRARY_PATH": "/opt/x", "PATH": "/bin"}, root)
    assert env["LD_LIBRARY_PATH"] == f"{libdir}:/opt/x:{tmp_path}/site/nvidia_pytriton.libs" and env["PATH"] == "/bin"
    assert server.server_env(env, root) == env  # once, however often the server starts
    checkout = tmp_path / "checkout" / "pytriton"  # an editable install's
    (checkout / "tritonserver" / "external_libs").mkdir(parents=True)
    assert server.server_env({}, checkout)["LD_LIBRARY_PATH"] == f"{libdir}:{checkout}/tritonserver/external_libs"
    assert server.server_env({}, tmp_path / "none")["LD_LIBRARY_PATH"] == libdir


def test_tritonserver_copied_as_pytriton_runs_it_starts_with_server_env_and_says_why_without(tmp_path):
    """The failure CI met: a serve venv that sees pytriton through a .pth file. PyTriton copies tritonserver
    into its workspace, out of its RPATH's reach, and adds a libraries folder that is not there."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        pytest.skip('nvidia-pytriton is not installed: pip install "eca-deploy[serve]"')
    root = Path(spec.origin).parent
    binary = tmp_path / "workspace" / "tritonserver" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    shutil.copy2(root / "tritonserver" / "bin" / "tritonserver", binary)
    bare = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    with pytest.raises(MissingDependencyError, match=r"^tritonserver cannot start here \(.*error while loading shared "
                       r"libraries: .*\): nvidia-pytriton's wheel needs glibc 2.35"):
        server.require_runnable_server(binary, bare)
    server.require_runnable_server(binary, server.server_env(bare, root))


def test_exit_watch_ends_the_wait_at_once_when_the_server_exits_and_only_then(tmp_path):
    """PyTriton's start-up waits 120 s on a server that died; exit_watch interrupts it (here: a loop of sleeps)
    as soon as a process of the watched program has run and exited, as tritonserver does when it cannot start."""
    binary = tmp_path / "workspace" / "tritonserver" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    shutil.copy2(shutil.which("sleep"), binary)
    with server.exit_watch(binary):  # nothing started: the block runs to its end
        time.sleep(0.3)
    proc = subprocess.Popen([str(binary), "60"])
    try:
        with server.exit_watch(binary):  # running throughout: likewise
            time.sleep(0.3)
        started = time.monotonic()
        with pytest.raises(server.ServerExited):
            with server.exit_watch(binary):
                time.sleep(0.3)  # seen running
                proc.kill()
                proc.wait(timeout=10)  # reaped, as PyTriton's process runner does
                while time.monotonic() < started + 60:  # PyTriton's readiness loop: sleeps of at most 1 s
                    time.sleep(1.0)
        assert time.monotonic() - started < 10
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_reap_stubs_ends_only_this_servers_stubs_and_their_shared_memory(tmp_path, monkeypatch):
    """A stub ignores SIGTERM once its server is gone; only the ones with our region prefix are ended."""
    monkeypatch.setattr(server, "SHM_ROOT", tmp_path)
    (tmp_path / "pytrtion1-ours").write_bytes(b"x")
    (tmp_path / "pytrtion12-theirs").write_bytes(b"x")
    stub = str(tmp_path / server.STUB)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    ours = subprocess.Popen([stub, "-c", code, "pytrtion1-ours"], executable=sys.executable)
    theirs = subprocess.Popen([stub, "-c", code, "pytrtion12-theirs"], executable=sys.executable)
    try:
        deadline = time.monotonic() + 10
        while not server._stubs("pytrtion1-") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.reap_stubs("pytrtion1-", grace=0.2) == [ours.pid]
        assert ours.wait(timeout=10) == -9 and theirs.poll() is None
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("pytrtion")] == ["pytrtion12-theirs"]
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait(timeout=10)


def test_a_taken_port_is_said_before_any_server_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EcaDeployError, match=f"cannot listen on 127.0.0.1:{port} \\(--grpc-port\\)"):
            server.require_free_ports(server.ServeConfig("m", "127.0.0.1", closed_port(), port))
    with pytest.raises(EcaDeployError, match="cannot listen on 192.0.2.1"):  # TEST-NET: no such interface here
        server.require_free_ports(server.ServeConfig("m", "192.0.2.1", closed_port(), closed_port()))


def test_a_failed_start_names_the_exception_the_stub_raised(tmp_path):
    """tritonserver's log line, as it was when the stub embedded the system's libpython (measured here by
    serving without server_env): the one-line error keeps its head and the exception, not the frames."""
    log = tmp_path / "tritonserver.log"
    log.write_text(
        'I1207 09:20:01.1 1 server.cc:674] "loading: m:1"\n'
        'E1207 09:20:02.3 1 model_lifecycle.cc:642] "failed to load \'m\' version 1: Internal: TritonModelException: '
        'Model initialize error: Traceback (most recent call last):\\n  File \\"/tmp/f/1/model.py\\", line 419, in '
        "initialize\\n    self._serializer_deserializer.start(data_socket)\\nAttributeError: '_thread.RLock' object "
        'has no attribute \'_recursion_count\'\\n\\nAt:\\n  /tmp/f/1/model.py(454): initialize\\n"\n')
    assert server._last_error(log) == (
        "failed to load 'm' version 1: Internal: TritonModelException: Model initialize error: ... "
        "AttributeError: '_thread.RLock' object has no attribute '_recursion_count'")
    assert server._last_error(tmp_path / "absent.log") is None


def test_the_error_lines_of_every_start_without_a_gpu_are_never_named_as_the_reason(tmp_path):
    """Lines of a real start on this CPU machine (tritonserver 2.51), after which the server was killed."""
    log = tmp_path / "tritonserver.log"
    log.write_text(
        'W1207 14:34:14.203922 28475 pinned_memory_manager.cc:273] "Unable to allocate pinned system memory, '
        'pinned memory pool will not be available: CUDA driver version is insufficient for CUDA runtime version"\n'
        'E1207 14:34:14.204054 28475 server.cc:241] "CudaDriverHelper has not been initialized."\n'
        'I1207 14:34:14.204101 28475 server.cc:260] "Server started"\n'
        'E1207 14:34:15.220043 28475 model_repository_manager.cc:470] "Failed to set config modification time: '
        'model_config_content_name_ is empty"\n')
    assert server._last_error(log) is None
    with log.open("a") as out:
        out.write('E1207 14:34:16.1 28475 model_lifecycle.cc:642] "failed to load \'m\' version 1: Internal: x"\n')
    assert server._last_error(log) == "failed to load 'm' version 1: Internal: x"
