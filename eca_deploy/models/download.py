"""Weights named by URL: downloaded once into a cache folder (atomically), then opened like any local file.

The official ECA-Net release is linked from github BangguWu/ECANet; timm's pretrained ECA models are
plain https files (GitHub releases, the Hugging Face hub). A checkpoint is untrusted input either way:
it is opened with ``torch.load(weights_only=True)`` and its sha256 is printed and recorded.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

from ..artifacts import atomic_path, require_file, sha256_file
from ..errors import CheckpointError, first_line
from ..progress import progress

URL_SCHEMES = ("https://", "http://")
CACHE_ENV = "ECA_DEPLOY_CACHE"  # overrides the cache folder ($XDG_CACHE_HOME/eca-deploy, ~/.cache/eca-deploy)
TIMEOUT_S = 30  # per network operation (connect, each read), not for the whole download
CHUNK = 1 << 20


def is_url(weights: str | os.PathLike | None) -> bool:
    return isinstance(weights, str) and weights.lower().startswith(URL_SCHEMES)


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "eca-deploy"


def cached_path(url: str) -> Path:
    """Where ``url`` is kept: its file name, in a folder keyed by the whole URL (Hugging Face names every
    model's file model.safetensors)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "weights"
    return cache_dir() / "weights" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def _download(url: str, destination: Path) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        with atomic_path(destination, expected) as tmp, open(tmp, "wb") as fh:
            bar = progress(total=-(-expected // CHUNK) if expected else None, desc=f"downloading {destination.name}",
                           unit="MB")
            while block := response.read(CHUNK):
                fh.write(block)
                received += len(block)
                bar.update(1)
            bar.close()
            if expected is not None and received != expected:  # the connection ended early: keep nothing
                raise CheckpointError(f"download of {url} ended after {received} of {expected} bytes; try again")


def fetch_weights(url: str) -> tuple[Path, bool]:
    """(local file, whether it came from the cache) for a weights URL."""
    destination = cached_path(url)
    if destination.is_file():
        return destination, True
    try:
        _download(url, destination)
    except urllib.error.HTTPError as exc:
        raise CheckpointError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", exc)  # URLError wraps the socket's or TLS's own error
        text = first_line(reason) if isinstance(reason, BaseException) else str(reason)
        hint = ("the server's certificate is not trusted here: point SSL_CERT_FILE at your CA bundle"
                if isinstance(reason, ssl.SSLError) else
                "no network here? download it on another machine and pass the file to --weights")
        raise CheckpointError(f"cannot download {url}: {text} ({hint})") from None
    return destination, False


def resolve_weights(weights: str | None, say: Callable[[str], None] = print) -> str | None:
    """A weights file checked, or a URL downloaded (or found in the cache) and its sha256 said: before any work."""
    if weights is None:
        return None
    if not is_url(weights):
        require_file(weights, "weights file", CheckpointError)
        return weights
    path, cached = fetch_weights(weights)
    size = path.stat().st_size / 2**20
    say(f"{'cached' if cached else 'downloaded'} {weights} -> {path} ({size:.1f} MB, sha256 {sha256_file(path)})")
    return str(path)
