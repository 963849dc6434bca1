"""Calibration ranges cached in one JSON file, keyed by model hash + data hash + method.

A re-run with the same model, the same images (same bytes, count, seed and
preprocessing) and the same method reads its ranges here instead of running the
model again. Entries for other models or methods live side by side in the file.
The histogram pass also leaves its per-tensor histograms (key ``...|histograms``),
so another --percentile, or entropy after percentile, is answered without a pass.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...artifacts import file_lock, write_json
from ...errors import DataError
from .calibrators import TensorRange, TensorStats

CACHE_FORMAT = "eca-deploy-calibration-cache/1"


def method_key(method: str, percentile: float) -> str:
    return f"percentile:{percentile:g}" if method == "percentile" else method


def cache_key(model_sha256: str, data_hash: str, method: str, percentile: float) -> str:
    return f"{model_sha256}|{data_hash}|{method_key(method, percentile)}"


def histogram_key(model_sha256: str, data_hash: str) -> str:
    return f"{model_sha256}|{data_hash}|histograms"


def read_cache(path: Path) -> dict:
    """The cache's payload ({"format", "entries"}), checked; an empty one where the file does not exist yet."""
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


FLOAT32_MAX = float(np.finfo(np.float32).max)


class Lookup(NamedTuple):
    """A cache entry's ranges and image count, or None with why the entry cannot be used (None: no entry).

    An entry that holds valid ranges for some of the tensors (the other target's set) also gives those
    (``present``) and the names it lacks (``missing``): a pass over just those completes it."""

    ranges: dict[str, TensorRange] | None
    images: int = 0
    problem: str | None = None
    present: dict[str, TensorRange] = {}
    missing: tuple[str, ...] = ()


def range_problem(r: TensorRange) -> str | None:
    """Why a range cannot have come from calibration: not finite in float32, amax not > 0, min > max, or
    amax above the |min|/|max| it was clipped from. A zero or negative range becomes a dummy scale and a
    huge one NaN in the INT8 model."""
    values = (r.min, r.max, r.amax)
    if not all(np.isfinite(v) and abs(v) <= FLOAT32_MAX for v in values):
        return f"min {r.min:g}, max {r.max:g}, amax {r.amax:g} are not finite float32 values"
    if not r.amax > 0:
        return f"amax {r.amax:g} is not > 0"
    if r.min > r.max:
        return f"min {r.min:g} > max {r.max:g}"
    if r.amax > max(-r.min, r.max) * (1 + 1e-6):
        return f"amax {r.amax:g} exceeds the largest |x| seen ({max(-r.min, r.max):g})"
    return None


def load_ranges(path: str | Path, key: str, tensors: list[str]) -> Lookup:
    """The ranges cached for ``key``, if the entry holds a valid range for every tensor in ``tensors``."""
    entry = read_cache(Path(path))["entries"].get(key)
    if entry is None:
        return Lookup(None)
    if not isinstance(entry, dict) or not isinstance(entry.get("ranges"), dict):
        return Lookup(None, problem="the entry for this model, data and method holds no ranges")
    ranges: dict[str, TensorRange] = {}
    missing = tuple(name for name in tensors if entry["ranges"].get(name) is None)
    for name in tensors:
        raw = entry["ranges"].get(name)
        if raw is None:
            continue
        try:
            ranges[name] = TensorRange(float(raw["min"]), float(raw["max"]), float(raw["amax"]))
        except (KeyError, TypeError, ValueError):
            return Lookup(None, problem=f"tensor {name} has no numeric min, max and amax")
        problem = range_problem(ranges[name])
        if problem:
            return Lookup(None, problem=f"tensor {name}: {problem}")
    images = entry.get("images")
    images = images if isinstance(images, int) and images >= 0 else 0
    if missing:
        return Lookup(None, images, f"the entry for this model, data and method lacks {len(missing)} of the "
                                    f"{len(tensors)} tensors (first: {missing[0]})", ranges, missing)
    return Lookup(ranges, images)


def store_ranges(path: str | Path, entries: dict[str, dict[str, TensorRange]], images: int) -> Path:
    """Add entries, written atomically; other entries in the file, also those another run added meanwhile, are kept.

    Ranges of tensors an entry already holds are replaced and the others kept: the key fixes model,
    data and method, so a tensor's range does not depend on which other tensors were collected with it
    (the two targets calibrate different tensor sets of the same model).
    """
    path = Path(path)
    with file_lock(path):
        return _merge(path, entries, images)


def _merge(path: Path, entries: dict[str, dict[str, TensorRange]], images: int) -> Path:
    payload = read_cache(path)
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


def load_histograms(path: str | Path, key: str, tensors: list[str]) -> tuple[dict[str, TensorStats], int] | None:
    """(statistics, image count) cached under ``key`` if they cover every tensor in ``tensors``, else None."""
    entry = read_cache(Path(path))["entries"].get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("stats"), dict):
        return None
    try:
        stats = {name: TensorStats.from_dict(entry["stats"][name]) for name in tensors}
    except (KeyError, TypeError, ValueError):
        return None
    return stats, int(entry.get("images") or 0)


def store_histograms(path: str | Path, key: str, stats: dict[str, TensorStats], images: int) -> Path:
    """Keep a histogram pass's statistics (merged per tensor, like ranges), written atomically."""
    path = Path(path)
    payload = read_cache(path)
    previous = payload["entries"].get(key)
    merged = dict(previous["stats"]) if isinstance(previous, dict) and isinstance(previous.get("stats"), dict) else {}
    merged.update({name: s.as_dict() for name, s in stats.items()})
    model_sha256, data_hash, _ = key.split("|", 2)
    payload["entries"][key] = {"model_sha256": model_sha256, "data_hash": data_hash, "method": "histograms",
                               "images": images, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(
                                   timespec="seconds"), "stats": dict(sorted(merged.items()))}
    return write_json(path, payload)
