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
import warnings
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


def check_outputs(outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output that resolves to a file the run reads, or to the same file as another output of the run.

    ``inputs`` must list every file read: the model with its external data and manifest, each data and list
    file; a file both read and rewritten (a cache) is an output only.
    """
    read = {Path(item).resolve(): item for item in inputs if item is not None}
    written: dict[Path, str | os.PathLike] = {}
    for output in outputs:
        if output is None:
            continue
        resolved = Path(output).resolve()
        if resolved in read:
            raise OutputError(f"refusing to overwrite the input file {read[resolved]} (this run reads it); "
                              "choose another output")
        if resolved in written:
            raise OutputError(f"{output} and {written[resolved]} are the same file, and this run writes both; "
                              "choose other outputs")
        written[resolved] = output


@contextlib.contextmanager
def _staged(destination: Path) -> Iterator[Path]:
    """A temporary file beside ``destination``, removed unless the caller renamed it into place."""
    ensure_output_dir(destination.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _seal(tmp_path: Path) -> None:
    """Flush a staged file to disk and give it the mode any other new file of the user's gets (mkstemp: 0600)."""
    with open(tmp_path, "rb+") as fh:
        os.fsync(fh.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)


def _fill(tmp_path: Path, data: bytes | str | Callable[[Path], None]) -> None:
    if callable(data):
        data(tmp_path)
    else:
        tmp_path.write_bytes(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    For writers that insist on a file name (onnx.save, TensorRT, matplotlib).
    """
    destination = Path(destination)
    with _staged(destination) as tmp_path:
        yield tmp_path
        _seal(tmp_path)
        os.replace(tmp_path, destination)


def atomic_write(destination: str | os.PathLike, data: bytes | str | Callable[[Path], None]) -> Path:
    """Write bytes, text, or call ``data(tmp_path)``, then rename into place."""
    destination = Path(destination)
    try:
        with atomic_path(destination) as tmp:
            _fill(tmp, data)
    except PermissionError as exc:
        raise OutputError(f"cannot write {destination}: permission denied") from exc
    return destination


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


def _manifest_payload(name: str, content: Path, stage: str, fields: dict) -> dict:
    return {"artifact": name, "stage": stage, "sha256": sha256_file(content), "size_bytes": content.stat().st_size,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **fields}


def write_artifact(destination: str | os.PathLike, data: bytes | Callable[[Path], None], stage: str,
                   **fields: Any) -> Path:
    """Write an artifact and its manifest as a pair; returns the manifest's path.

    Both are written and flushed beside their names first (a full disk stops here, old pair intact);
    then the old manifest goes, the artifact is renamed into place, and the manifest after it. A crash
    in between leaves an artifact without a manifest, never one beside another artifact's manifest.
    """
    destination = Path(destination)
    manifest = manifest_path(destination)
    try:
        with _staged(destination) as artifact_tmp, _staged(manifest) as manifest_tmp:
            _fill(artifact_tmp, data)
            _seal(artifact_tmp)
            payload = _manifest_payload(destination.name, artifact_tmp, stage, fields)
            manifest_tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
            _seal(manifest_tmp)
            with contextlib.suppress(FileNotFoundError):
                manifest.unlink()
            os.replace(artifact_tmp, destination)
            os.replace(manifest_tmp, manifest)
    except PermissionError as exc:
        raise OutputError(f"cannot write {destination}: permission denied") from exc
    return manifest


def read_manifest(artifact: str | os.PathLike) -> dict[str, Any] | None:
    path = manifest_path(artifact)
    return read_json(path) if path.exists() else None


def verified_manifest(artifact: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest beside ``artifact`` if it describes these very bytes (its sha256 matches), else None.

    A stale manifest (the artifact was replaced, or a crash came between the two writes) is ignored
    with a warning, never trusted: its precision or settings belong to another file.
    """
    manifest = read_manifest(artifact)
    if manifest is None:
        return None
    if not isinstance(manifest, dict) or manifest.get("sha256") != sha256_file(artifact):
        warnings.warn(f"{manifest_path(artifact).name} does not describe {Path(artifact).name} (sha256 differs); "
                      "ignored", StaleManifestWarning, stacklevel=2)
        return None
    return manifest


class StaleManifestWarning(UserWarning):
    """A manifest beside an artifact that describes other bytes."""
