"""Calibration ranges cached in one JSON file, keyed by model hash + data hash + method.

A re-run with the same model, the same images (same bytes, count, seed and
preprocessing) and the same method reads its ranges here instead of running the
model again. Entries for other models or methods live side by side in the file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

from ..artifacts import ensure_output_dir, write_json
from ..errors import DataError
from .calibrators import TensorRange

CACHE_FORMAT = "eca-deploy-calibration-cache/1"


def method_key(method: str, percentile: float) -> str:
    return f"percentile:{percentile:g}" if method == "percentile" else method


def cache_key(model_sha256: str, data_hash: str, method: str, percentile: float) -> str:
    return f"{model_sha256}|{data_hash}|{method_key(method, percentile)}"


def _read(path: Path) -> dict:
    if not path.exists():
        return {"format": CACHE_FORMAT, "entries": {}}
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"calibration cache {path} is not readable JSON ({type(exc).__name__}); "
                        "delete it or choose another --calib-cache") from exc
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT \
            or not isinstance(payload.get("entries"), dict):
        raise DataError(f"{path} is not an eca-deploy calibration cache; delete it or choose another --calib-cache")
    return payload


def load_ranges(path: str | Path, key: str, tensors: list[str]) -> tuple[dict[str, TensorRange], int] | None:
    """(ranges, image count) cached for ``key`` if the entry covers every tensor in ``tensors``, else None."""
    entry = _read(Path(path))["entries"].get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("ranges"), dict):
        return None
    try:
        ranges = {name: TensorRange(float(r["min"]), float(r["max"]), float(r["amax"]))
                  for name, r in entry["ranges"].items()}
    except (KeyError, TypeError, ValueError):
        return None
    return (ranges, int(entry.get("images") or 0)) if all(t in ranges for t in tensors) else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock while reading, merging and replacing the cache: runs sharing one cache wait for
    each other instead of one writing over entries the other added since it read the file. The lock is on
    the cache's folder (the cache itself is replaced by rename, so its inode cannot carry a lock), which
    leaves no lock file behind."""
    folder = os.open(ensure_output_dir(path.parent), os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # closing releases the lock


def store_ranges(path: str | Path, entries: dict[str, dict[str, TensorRange]], images: int) -> Path:
    """Add entries, written atomically; other entries in the file, also those another run added meanwhile, are kept.

    Ranges of tensors an entry already holds are replaced and the others kept: the key fixes model,
    data and method, so a tensor's range does not depend on which other tensors were collected with it
    (the two targets calibrate different tensor sets of the same model).
    """
    path = Path(path)
    with _locked(path):
        return _merge(path, entries, images)


def _merge(path: Path, entries: dict[str, dict[str, TensorRange]], images: int) -> Path:
    payload = _read(path)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for key, ranges in entries.items():
        model_sha256, data_hash, method = key.split("|", 2)
        previous = payload["entries"].get(key)
        merged = dict(previous["ranges"]) if isinstance(previous, dict) and isinstance(previous.get("ranges"), dict) \
            else {}
        merged.update({name: r.as_dict() for name, r in ranges.items()})
        payload["entries"][key] = {"model_sha256": model_sha256, "data_hash": data_hash, "method": method,
                                   "images": images, "created": created, "ranges": dict(sorted(merged.items()))}
    return write_json(path, payload)
