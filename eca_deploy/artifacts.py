"""Artifacts on disk: atomic writes, content hashes and the JSON manifest beside each artifact.

Every stage writes its artifact through :func:`atomic_write` (temporary file in the
same folder, fsync, rename) so a crash or an error never leaves half a file, and
records where the artifact came from in ``<artifact>.json``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import __version__
from .errors import OutputError

MANIFEST_SUFFIX = ".json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(artifact: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: unique even when two artifacts share a stem."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def ensure_output_dir(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {directory}: {exc.strerror or exc}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {directory} is not writable")
    return directory


def ensure_not_input(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse to write over a file the user gave us."""
    out = Path(output).resolve()
    for item in inputs:
        if item is not None and Path(item).exists() and Path(item).resolve() == out:
            raise OutputError(f"refusing to overwrite the input file {item}; choose another output")


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    For writers that insist on a file name (onnx.save, TensorRT, matplotlib).
    """
    destination = Path(destination)
    ensure_output_dir(destination.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the artifact the mode any other new file of the user's gets.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write(destination: str | os.PathLike, data: bytes | str | Callable[[Path], None]) -> Path:
    """Write bytes, text, or call ``data(tmp_path)``, then rename into place."""
    destination = Path(destination)
    try:
        with atomic_path(destination) as tmp:
            if callable(data):
                data(tmp)
            else:
                tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    except PermissionError as exc:
        raise OutputError(f"cannot write {destination}: permission denied") from exc
    return destination


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive lock on ``<path>.lock`` across processes (as Polygraphy's util.LockFile takes before
    updating a timing cache), for read-merge-write updates of a shared file."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    with open(lock, "a+b") as fh:
        if os.name == "nt":
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if os.name == "nt":
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_json(destination: str | os.PathLike, payload: Any) -> Path:
    return atomic_write(destination, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def package_versions(*names: str) -> dict[str, str | None]:
    """Installed versions of the named distributions (None where absent), read without importing them."""
    from importlib import metadata

    versions: dict[str, str | None] = {"eca-deploy": __version__}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_manifest(artifact: str | os.PathLike, stage: str, **fields: Any) -> Path:
    """Write ``<artifact>.json`` recording what the artifact is and where it came from."""
    artifact = Path(artifact)
    payload = {
        "artifact": artifact.name,
        "stage": stage,
        "sha256": sha256_file(artifact),
        "size_bytes": artifact.stat().st_size,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }
    return write_json(manifest_path(artifact), payload)


def read_manifest(artifact: str | os.PathLike) -> dict[str, Any] | None:
    path = manifest_path(artifact)
    return read_json(path) if path.exists() else None
