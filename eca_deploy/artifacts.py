"""Artifacts on disk: atomic writes, content hashes and the JSON manifest beside each artifact.

Every stage writes its artifact through :func:`atomic_write` (temporary file in the
same folder, fsync, rename) so a crash or an error never leaves half a file, and
records where the artifact came from in ``<artifact>.json``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import __version__
from .errors import EcaDeployError, ManifestError, OutputError, first_line, warn

MANIFEST_SUFFIX = ".json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: str | os.PathLike, what: str, error: type[EcaDeployError]) -> Path:
    """``path`` if it is a file; else ``error`` saying whether it is missing or a directory."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    return path


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


@contextlib.contextmanager
def output_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """:func:`ensure_output_dir`, undone when the work inside fails or is interrupted (Ctrl-C): the folders
    it created are removed again while they are still empty."""
    directory = Path(directory)
    created = [p for p in (directory, *directory.parents) if not p.exists()]  # deepest first
    path = ensure_output_dir(directory)
    try:
        yield path
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break  # something was written there after all
        raise


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
        if Path(output).is_dir():
            raise OutputError(f"output {output} is an existing directory; give a file name inside it")
        resolved = Path(output).resolve()
        if resolved in read:
            raise OutputError(f"refusing to overwrite the input file {read[resolved]} (this run reads it); "
                              "choose another output")
        if resolved in written:
            raise OutputError(f"{output} and {written[resolved]} are the same file, and this run writes both; "
                              "choose other outputs")
        written[resolved] = output




DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def free_bytes(folder: Path) -> int | None:
    """Space left for us in ``folder``, or None where it cannot be told."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full_error(destination: Path, needed: int | None) -> OutputError:
    """The one wording for a full disk or quota: the folder, what the file needed, what is free."""
    free = free_bytes(destination.parent)
    free = f", {_mb(free)} free" if free is not None else ""
    need = f" (needs {_mb(needed)}{free})" if needed is not None else f" ({free[2:]})" if free else ""
    return OutputError(f"no space left in {destination.parent} to write {destination.name}{need}; free some "
                       "space or choose another output folder")


# mkstemp's names: "." + the destination's name + "." + 8 random characters + ".tmp".
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# staging folders (staging_dir): "." + a prefix of ours + 8 random characters, as tempfile names them
STAGING_PREFIXES = (".openvino-", ".triton-")  # an IR; a Triton model folder (packaging/triton.py)
STAGING_DIR_NAME = re.compile(rf"^(?:{'|'.join(re.escape(p) for p in STAGING_PREFIXES)})[a-z0-9_]{{8}}$")
STALE_TEMP_S = 600  # a temporary file untouched this long, and not locked by its writer, is a dead run's


def sweep_stale_temps(folder: Path) -> list[str]:
    """Delete temporary files and staging folders a killed run (kill -9, power loss) left in ``folder``: only
    our own naming, only when stale, and never one a live writer holds (each holds an flock on it while
    writing)."""
    now = time.time()
    candidates = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        candidates = [e for e in entries if _is_our_temp(e)]
    return [entry.name for entry in candidates if _remove_if_dead(entry, now)]


def _is_our_temp(entry: os.DirEntry) -> bool:
    if TEMP_NAME.match(entry.name):
        return entry.is_file(follow_symlinks=False)
    return bool(STAGING_DIR_NAME.match(entry.name)) and entry.is_dir(follow_symlinks=False)


def _remove_if_dead(entry: os.DirEntry, now: float) -> bool:
    try:
        if now - entry.stat(follow_symlinks=False).st_mtime < STALE_TEMP_S:
            return False
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)  # a link put in its place is not followed
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer is alive
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def staging_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary folder in ``parent`` for outputs written as several files (an OpenVINO IR; ``prefix`` is one of
    STAGING_PREFIXES, the names the sweep recognises), locked while it lives so that no other run's sweep
    removes it, deleted on exit; a dead run's is swept once stale."""
    ensure_output_dir(parent)
    sweep_stale_temps(parent)
    with tempfile.TemporaryDirectory(dir=parent, prefix=prefix) as tmp:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield Path(tmp)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _staged(destination: Path, size: int | None = None) -> Iterator[Path]:
    """A temporary file beside ``destination``, locked while it lives, removed unless the caller renamed it
    into place; a full disk becomes one line naming the folder and what was needed."""
    ensure_output_dir(destination.parent)
    sweep_stale_temps(destination.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(destination, size) from exc
        raise
    fcntl.flock(fd, fcntl.LOCK_EX)  # held until the rename: tells sweep_stale_temps this file is live
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full_error(destination, size) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        os.close(fd)


def _seal(tmp_path: Path) -> None:
    """Flush a staged file to disk and give it the mode any other new file of the user's gets (mkstemp: 0600)."""
    with open(tmp_path, "rb+") as fh:
        os.fsync(fh.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place on success.

    For writers that insist on a file name (onnx.save, TensorRT, matplotlib). ``size``: the bytes the
    file will take, where known, for the message if the disk is full.
    """
    destination = Path(destination)
    with _staged(destination, size) as tmp_path:
        yield tmp_path
        _seal(tmp_path)
        os.replace(tmp_path, destination)


def atomic_write(destination: str | os.PathLike, data: bytes | str | Callable[[Path], None]) -> Path:
    """Write bytes, text, or call ``data(tmp_path)``, then rename into place."""
    destination = Path(destination)
    if isinstance(data, str):
        data = data.encode("utf-8", "backslashreplace")  # a non-UTF-8 file name in a report stays readable
    try:
        with atomic_path(destination, None if callable(data) else len(data)) as tmp:
            if callable(data):
                data(tmp)
            else:
                tmp.write_bytes(data)
    except PermissionError as exc:
        raise OutputError(f"cannot write {destination}: permission denied") from exc
    return destination


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, lock_file: str | os.PathLike | None = None) -> Iterator[None]:
    """Exclusive lock across processes for a read-merge-write update of ``path``, which is replaced by rename
    (so its own inode cannot carry the lock): on ``lock_file`` where another tool takes one (Polygraphy's
    util.LockFile takes ``<timing cache>.lock``), else on ``path``'s folder, which leaves no file behind."""
    if lock_file is not None:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    else:
        fd = os.open(ensure_output_dir(Path(path).parent), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
    size = None if callable(data) else len(data)
    try:
        with _staged(destination, size) as artifact_tmp:  # a full disk here is named for the artifact
            if callable(data):
                data(artifact_tmp)
            else:
                artifact_tmp.write_bytes(data)
            _seal(artifact_tmp)
            text = json.dumps(_manifest_payload(destination.name, artifact_tmp, stage, fields), indent=2,
                              default=str) + "\n"
            with _staged(manifest, len(text)) as manifest_tmp:
                manifest_tmp.write_text(text)
                _seal(manifest_tmp)
                with contextlib.suppress(FileNotFoundError):
                    manifest.unlink()
                os.replace(artifact_tmp, destination)
                os.replace(manifest_tmp, manifest)
    except PermissionError as exc:
        raise OutputError(f"cannot write {destination}: permission denied") from exc
    return manifest


def read_manifest(artifact: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest beside ``artifact``; None where there is none; ManifestError where it is not a JSON object."""
    path = manifest_path(artifact)
    if not path.exists():
        return None
    try:
        payload = read_json(path)
    except (OSError, ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError and bad UTF-8
        raise ManifestError(f"manifest {path} is not readable JSON ({first_line(exc)})") from exc
    if not isinstance(payload, dict):
        raise ManifestError(f"manifest {path} holds a JSON {type(payload).__name__}, not an object")
    return payload


WEIGHTS_FIELDS = ("weights_sha256", "random_init_seed")  # which weights an artifact was made from


def weights_fields(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of ``manifest`` that say which weights it was made from, for the manifest of an artifact made
    from it (a quantized ONNX, an engine): every artifact records its weights, not just the export."""
    return {key: manifest[key] for key in WEIGHTS_FIELDS if manifest and key in manifest}


def source_weights(source: str | os.PathLike) -> dict[str, Any]:
    """weights_fields of the manifest beside ``source``; {} where it has none or an unreadable one."""
    try:
        return weights_fields(read_manifest(source))
    except ManifestError:
        return {}


def weights_identity(manifest: dict[str, Any] | None) -> str | None:
    """'sha256 <hex>' of the weights file, 'random init (seed N)', or None where the manifest does not say."""
    if not manifest or "weights_sha256" not in manifest:
        return None
    if manifest["weights_sha256"]:
        return f"sha256 {manifest['weights_sha256']}"
    seed = manifest.get("random_init_seed")
    return f"random init (seed {seed})" if seed is not None else None


def short_identity(identity: str) -> str:
    """A weights identity short enough for one line: the first 12 hex digits of a sha256."""
    return identity[:len("sha256 ") + 12] + "..." if identity.startswith("sha256 ") else identity


def verified_manifest(artifact: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest beside ``artifact`` if it describes these very bytes (its sha256 matches), else None.

    A stale manifest (the artifact was replaced, or a crash came between the two writes) is ignored
    with a warning, never trusted: its precision or settings belong to another file.
    """
    manifest = read_manifest(artifact)
    if manifest is None:
        return None
    if manifest.get("sha256") != sha256_file(artifact):
        warn(f"manifest {manifest_path(artifact)} does not describe {artifact} (sha256 differs); ignored")
        return None
    return manifest
