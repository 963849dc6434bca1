"""Ranges per calibration method: from the cache, or from running the FP32 model on calibration batches and
feeding each requested activation to its statistics.

The model is copied with the requested tensors added as graph outputs; every
batch's activations update the running statistics and are dropped before the
next batch, so memory is bounded by one batch's activations, not by the data set.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from pathlib import Path

from ...data.sources import Dataset, skipped_files
from ...errors import DataError, warn
from ...graph.session import make_session
from .cache import (cache_key, histogram_key, load_histograms, load_ranges, range_problem, store_histograms,
                    store_ranges)
from .calibrators import METHODS, TensorRange, TensorStats


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the named intermediate tensors."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    augmented.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                                  for n in names if n not in present)
    return augmented


def collect_stats(model: onnx.ModelProto, tensors: list[str], data: Dataset, batch_size: int,
                  histograms: bool = True, threads: int | None = None,
                  desc: str = "calibrating") -> tuple[dict[str, TensorStats], int]:
    """Statistics of ``tensors`` over every usable image of ``data``; returns (stats, images used)."""
    session = make_session(with_outputs(model, tensors), threads=threads, label="the input model")
    input_name = session.get_inputs()[0].name
    stats = {name: TensorStats(histogram=histograms) for name in tensors}
    used = 0
    for batch, _ in data.batches(batch_size, desc=desc):
        outputs = session.run(tensors, {input_name: batch})
        for name, value in zip(tensors, outputs):
            try:
                stats[name].update(value)
            except FloatingPointError as exc:
                raise DataError(f"calibration: tensor {name} went non-finite on {data.description} "
                                f"({exc}); the model or the data is broken") from exc
        used += len(batch)
        del outputs
    return stats, used


def calibrate(model: onnx.ModelProto, tensors: list[str], model_sha256: str, data: Dataset, cache: Path | None,
              methods: tuple[str, ...], batch_size: int, percentile: float
              ) -> tuple[dict[str, dict[str, TensorRange]], dict]:
    """Ranges per method in ``methods`` from the cache, or from one pass over ``data`` (which fills the cache).

    A histogram pass yields all three methods at no extra cost, so all of them go into the cache, and
    so do the histograms themselves: any other --percentile is then answered from them, without a pass.
    """
    keys = {m: cache_key(model_sha256, data.data_hash, m, percentile) for m in methods}
    hist_key = histogram_key(model_sha256, data.data_hash)
    info = {"data_hash": data.data_hash, "tensors": len(tensors), "cache": str(cache) if cache else None,
            "cache_ignored": None}
    histograms = methods != ("minmax",)
    if cache is not None and cache.exists():
        cached = {m: load_ranges(cache, key, tensors) for m, key in keys.items()}
        if all(c.ranges is not None for c in cached.values()):
            images = next(iter(cached.values())).images
            return {m: c.ranges for m, c in cached.items()}, {**info, "cached": True, "images": images, "skipped": []}
        problems = [c.problem for c in cached.values() if c.problem]
        kept = load_histograms(cache, hist_key, tensors) if histograms and not problems else None
        if kept is not None:
            stats, used = kept
            entries = {keys[m]: {name: s.range(m, percentile) for name, s in stats.items()} for m in methods}
            problems = [f"{name}: {problem}" for ranges in entries.values() for name, r in ranges.items()
                        if (problem := range_problem(r))][:1]
            if not problems:
                store_ranges(cache, entries, used)
                return ({m: entries[key] for m, key in keys.items()},
                        {**info, "cached": True, "images": used, "skipped": [], "from_histograms": True})
        lacking = _lacking(cached, tensors)
        if lacking and not any(c.problem and not c.missing for c in cached.values()):
            # the other target's run left these entries: compute only the tensors this target adds
            ranges, used, skipped = _collect(model, lacking, data, batch_size, percentile, cache, model_sha256, keys,
                                             f"calibrating {len(lacking)} of {len(tensors)} tensors (the others "
                                             f"cached in {cache.name})")
            return ({m: {**cached[m].present, **ranges[m]} for m in methods},
                    {**info, "cached": False, "images": used, "skipped": skipped, "recomputed": len(lacking)})
        if problems:  # a stale or poisoned entry: recalibrate (and overwrite it) rather than trust it
            info["cache_ignored"] = f"calibration cache {cache} ignored: {problems[0]}; recalibrated"
            warn(info["cache_ignored"])  # said before the pass, not after it
    ranges, used, skipped = _collect(model, tensors, data, batch_size, percentile, cache, model_sha256, keys,
                                      "calibrating")
    return ranges, {**info, "cached": False, "images": used, "skipped": skipped}


def _lacking(cached: dict, tensors: list[str]) -> list[str]:
    """The tensors some method's cache entry lacks, in network order, where every entry holds some of them
    (a complete pass is no dearer than completing entries that hold nothing)."""
    if any(not c.present for c in cached.values()):
        return []
    missing = {name for c in cached.values() for name in c.missing}
    return [name for name in tensors if name in missing]


def _collect(model: onnx.ModelProto, tensors: list[str], data: Dataset, batch_size: int, percentile: float,
             cache: Path | None, model_sha256: str, keys: dict[str, str], desc: str):
    """One statistics pass over ``tensors``: ranges per requested method (``keys``), stored in the cache (every
    method the pass yields, added to the entries' other tensors), the image count and the files skipped."""
    histograms = tuple(keys) != ("minmax",)
    stats, used = collect_stats(model, tensors, data, batch_size, histograms=histograms, desc=desc)
    computed = METHODS if histograms else ("minmax",)
    entries = {cache_key(model_sha256, data.data_hash, m, percentile):
               {name: s.range(m, percentile) for name, s in stats.items()} for m in computed}
    if cache is not None:
        store_ranges(cache, entries, used)
        if histograms:
            store_histograms(cache, histogram_key(model_sha256, data.data_hash), stats, used)
    return {m: entries[key] for m, key in keys.items()}, used, skipped_files(data)
