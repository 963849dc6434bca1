"""`--weights https://...`: downloaded once into the cache (atomically, sha256 said), one line where it cannot be.

A real HTTP server on 127.0.0.1 serves the trained digits checkpoint; nothing leaves this machine.
"""

import contextlib
import http.server
import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from eca_deploy.artifacts import read_manifest, sha256_file
from eca_deploy.cli.main import main
from eca_deploy.models.download import CACHE_ENV, cached_path


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /<name>: the file the server holds; /short: a Content-Length the body never reaches; else 404."""

    def do_GET(self):
        self.server.requests.append(self.path)
        body = self.server.payload
        if self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            return
        if self.path != "/" + self.server.name:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output clean
        pass


@contextlib.contextmanager
def _serving(payload: bytes, name: str, tls: ssl.SSLContext | None = None):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload, httpd.name, httpd.requests = payload, name, []
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def server(digits):
    with _serving(digits.checkpoint.read_bytes(), digits.checkpoint.name) as served:
        yield served


@pytest.mark.slow
def test_https_with_a_certificate_this_machine_trusts(digits, cache, tmp_path, monkeypatch, capsys):
    """A real TLS server (self-signed for 127.0.0.1, trusted through SSL_CERT_FILE as a company CA would be)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with _serving(digits.checkpoint.read_bytes(), digits.checkpoint.name, tls) as (_, base):
        url = f"{base}/{digits.checkpoint.name}"
        code = _export(digits, url, tmp_path / "untrusted")  # not trusted yet: one line, nothing kept
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and "CERTIFICATE_VERIFY_FAILED" in err[-1] and "SSL_CERT_FILE" in err[-1], err
        assert len(err) == 1 and "Traceback" not in err[0]
        assert not cached_path(url).exists()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert _export(digits, url, tmp_path / "out") == 0
    assert f"sha256 {sha256_file(digits.checkpoint)}" in capsys.readouterr().out
    assert cached_path(url).read_bytes() == digits.checkpoint.read_bytes()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def _export(digits, weights, out):
    return main(["export", "--model", digits.model, "--weights", weights, "--imgsz", str(digits.imgsz),
                 "--output", str(out)])


@pytest.mark.slow
def test_url_weights_download_once_with_sha256_and_export_from_them(digits, server, cache, tmp_path, capsys):
    httpd, base = server
    url = f"{base}/{digits.checkpoint.name}"
    sha = sha256_file(digits.checkpoint)
    assert _export(digits, url, tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert f"downloaded {url} -> " in out and f"sha256 {sha}" in out
    cached = cached_path(url)
    assert cached.read_bytes() == digits.checkpoint.read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == [digits.checkpoint.name]  # no temp file left
    manifest = read_manifest(tmp_path / "a" / f"{digits.model}.onnx")
    assert manifest["weights_sha256"] == sha and manifest["num_classes"] == digits.num_classes

    assert _export(digits, url, tmp_path / "b") == 0  # second time: from the cache, no request
    assert f"cached {url} -> " in capsys.readouterr().out
    assert httpd.requests == [f"/{digits.checkpoint.name}"]


@pytest.mark.parametrize("path, match", [("/missing.pth", "HTTP 404"), ("/short", "ended after")])
def test_failed_downloads_are_one_line_and_leave_nothing(digits, server, cache, tmp_path, capsys, path, match):
    _, base = server
    code = _export(digits, base + path, tmp_path / "out")
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("eca-deploy:")]  # progress lines may precede
    assert code == 2 and len(errors) == 1 and errors[0].startswith("eca-deploy: error: ") and match in errors[0], err
    assert "Traceback" not in err
    assert "exporting" not in out and not (tmp_path / "out").exists()
    assert not [p for p in cache.rglob("*") if p.is_file()], "a partial download was kept"


def test_no_network_is_one_line_before_any_work(digits, cache, tmp_path, capsys):
    with socket.socket() as sock:  # a port nothing listens on: what a machine without network meets
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = _export(digits, f"https://127.0.0.1:{port}/eca_resnet50_k3557.pth.tar", tmp_path / "out")
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "cannot download" in lines[0] and "no network here?" in lines[0], err
    assert out == "" and not (tmp_path / "out").exists()


def test_missing_weights_file_fails_before_exporting(tmp_path, capsys):
    code = main(["export", "--model", "eca_resnet18", "--weights", str(tmp_path / "nope.pth"),
                 "--output", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.strip() == f"eca-deploy: error: weights file not found: {tmp_path / 'nope.pth'}"
