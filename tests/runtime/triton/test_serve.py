"""`eca-deploy serve` through a real Triton server (PyTriton), answered by tritonclient, measured by `bench`.

The server runs in a subprocess on 127.0.0.1 at free ports. PyTriton 0.7's Python-backend stub reads numpy 1
arrays only, so the server needs a Python with numpy<2: this one, or the interpreter named by
$ECA_DEPLOY_SERVE_PYTHON (e.g. a venv made with --system-site-packages plus numpy<2); without one the tests
are skipped, saying so. Every loop is bounded and the server is always stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eca_deploy.cli.main import main
from eca_deploy.data.sources import load_dataset
from eca_deploy.precisions import FP32_FIXED
from eca_deploy.runtime.registry import open_backend
from eca_deploy.runtime.triton.server import SHM_ROOT, _stubs

pytestmark = pytest.mark.slow
http = pytest.importorskip("tritonclient.http")

READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
NAME = "digits"


def serve_python() -> str:
    """An interpreter that can run the server, or a skip that says what is missing."""
    python = os.environ.get("ECA_DEPLOY_SERVE_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import numpy, pytriton; print(numpy.__version__)"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"{python} has no nvidia-pytriton: pip install \"eca-deploy[serve]\"")
    if int(probe.stdout.split(".")[0]) >= 2:
        pytest.skip(f"{python} has numpy {probe.stdout.strip()}; PyTriton's stub needs numpy<2: set "
                    "ECA_DEPLOY_SERVE_PYTHON to a Python that has it")
    return python


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def stop(proc: subprocess.Popen) -> int:
    """Ctrl-C, as a user stops it; a kill only where that did not end it within STOP_TIMEOUT_S."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
            raise AssertionError("serve did not stop on Ctrl-C") from None
    return proc.returncode


def start_serve(digits, log: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    """`eca-deploy serve` on the digits ECA-ResNet-18 ONNX at free ports, its output in ``log``; and its HTTP port."""
    python = serve_python()
    http_port, grpc_port = free_ports(2)
    with open(log, "w") as out:
        proc = subprocess.Popen([python, "-m", "eca_deploy", "serve", str(digits.onnx), "--name", NAME,
                                 "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--threads", "1",
                                 *extra], stdout=out, stderr=subprocess.STDOUT)
    return proc, http_port


@pytest.fixture(scope="module")
def server(digits, tmp_path_factory):
    """(url, http port, process, log) of `eca-deploy serve` on the digits ECA-ResNet-18 ONNX."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    started = time.perf_counter()
    proc, http_port = start_serve(digits, log, "--max-batch-size", "8")
    client = http.InferenceServerClient(f"127.0.0.1:{http_port}")
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"serve exited ({proc.returncode}): {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT_S} s: {log.read_text()[-2000:]}"
            try:
                if client.is_model_ready(NAME):
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.25)
        print(f"server ready after {time.perf_counter() - started:.1f} s")  # the measured start, with -s
        yield f"127.0.0.1:{http_port}", proc, log
    finally:
        client.close()
        code = stop(proc)
        stray = _stubs(f"pytrtion{proc.pid}-")
        for pid in stray:
            os.kill(pid, signal.SIGKILL)
        assert code == 0, log.read_text()[-2000:]
        assert not stray, f"stubs left running: {stray}"
        assert not list(SHM_ROOT.glob(f"pytrtion{proc.pid}-*"))
        assert "stopped" in log.read_text()


def test_served_logits_equal_the_direct_backends(server, digits):
    """Real images, preprocessed as parity does, sent one request of 8 and 8 requests of 1 (the dynamic
    batcher joins those): the server's logits are onnxruntime's within FP32's fixed limit."""
    address, _, _ = server
    images = next(load_dataset(digits.val_dir, digits.imgsz, 8, 0).batches(8))[0]
    with open_backend(str(digits.onnx), provider="cpu", threads=1) as backend:
        expected = backend.infer(images)
        name = backend.input_spec.name
    client = http.InferenceServerClient(address, concurrency=8)
    try:
        def request(batch):
            data = http.InferInput(name, list(batch.shape), "FP32")
            data.set_data_from_numpy(batch)
            return data

        started = time.perf_counter()
        whole = client.infer(NAME, [request(images)]).as_numpy("logits")
        print(f"one request of 8 images: {1e3 * (time.perf_counter() - started):.1f} ms")
        pending = [client.async_infer(NAME, [request(images[i:i + 1])]) for i in range(len(images))]
        singles = np.concatenate([p.get_result(timeout=60).as_numpy("logits") for p in pending])
    finally:
        client.close()
    for got in (whole, singles):
        assert got.shape == expected.shape
        assert np.all(np.abs(got - expected) <= FP32_FIXED.atol + FP32_FIXED.rtol * np.abs(expected))
    assert (whole.argmax(1) == expected.argmax(1)).all()


def test_bench_measures_the_server_at_each_concurrency(server, digits, tmp_path, capsys):
    address, _, _ = server
    out = tmp_path / "bench.json"
    assert main(["bench", f"triton://{address}/{NAME}", "--concurrency", "1,2,4,8", "--batch-sizes", "1,4",
                 "--iterations", "24", "--warmup", "1", "-o", str(out)]) == 0
    print(capsys.readouterr().out)
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert (row["format"], row["backend"], row["artifact"]) == ("Triton", "triton-http", f"triton://{address}/{NAME} (Triton)")
    bench = row["bench"]
    assert bench["server"]["name"] == "triton" and bench["server"]["model"]["max_batch_size"] == 8
    assert bench["server"]["model"]["dynamic_batching"] and bench["imgsz"] == digits.imgsz
    levels = [(e["batch"], e["concurrency"]) for e in bench["batches"]]
    assert levels == [(b, c) for b in (1, 4) for c in (1, 2, 4, 8)]
    for entry in bench["batches"]:
        assert entry["iterations"] == 24 and entry["clock"] == "client"
        assert 0 < entry["min"] <= entry["p50"] <= entry["p90"] <= entry["p99"]
        assert entry["fps"] > 0
    assert report["devices"][0]["label"] == row["device"]  # the client machine
    assert main(["report", str(out), "-o", str(tmp_path / "report"), "--no-plots"]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| In flight |" in markdown and "| triton-http | 4 | 8 | client |" in markdown


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.parametrize("when, said", [
    ("ready", "the Triton server stopped by itself"),
    # PyTriton alone waits out its 120 s start-up timeout on a server that exited while starting
    ("starting", "Triton did not start: tritonserver exited"),
])
def test_a_server_that_dies_ends_serve_at_once_with_an_error_and_no_stub_left(digits, tmp_path, when, said):
    log = tmp_path / "serve.log"
    deadline = time.monotonic() + READY_TIMEOUT_S
    proc, _ = start_serve(digits, log)
    try:
        servers = []  # PyTriton's copy in its workspace, not the `--help` check that runs first
        while not servers or (when == "ready" and "Ctrl-C stops" not in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            servers = [pid for pid, cmd in children(proc.pid)
                       if cmd.split(" ")[0].endswith("/workspace/tritonserver/bin/tritonserver")]
            time.sleep(0.02)
        if when == "starting":
            time.sleep(0.2)  # seen running by serve, still starting (it is ready a second or more later)
            assert "Ctrl-C stops" not in log.read_text()
        os.kill(servers[0], signal.SIGKILL)
        killed = time.monotonic()
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 2
        assert time.monotonic() - killed < 30, "serve waited for PyTriton's start-up timeout"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    assert f"eca-deploy: error: {said}" in log.read_text()
    assert not _stubs(f"pytrtion{proc.pid}-") and not list(SHM_ROOT.glob(f"pytrtion{proc.pid}-*"))


def test_ctrl_c_while_the_model_loads_ends_serve_in_one_line_and_leaves_nothing(digits, tmp_path):
    """While the model loads, PyTriton's client waits on gevent's hub, which printed a Ctrl-C as a traceback."""
    log = tmp_path / "serve.log"
    deadline = time.monotonic() + READY_TIMEOUT_S
    proc, _ = start_serve(digits, log)
    try:
        while not _stubs(f"pytrtion{proc.pid}-"):  # the model's stub has started: it is loading
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.02)
        assert "Ctrl-C stops" not in log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    text = log.read_text()
    assert text.rstrip().endswith("eca-deploy: interrupted") and "Traceback" not in text, text[-2000:]
    assert not _stubs(f"pytrtion{proc.pid}-") and not list(SHM_ROOT.glob(f"pytrtion{proc.pid}-*"))
