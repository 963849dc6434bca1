"""Issue 11, item 4: a poisoned calibration cache is validated, ignored and recalibrated, or named."""

import json

import pytest

from eca_deploy.calibration.int8 import cache as cache_module
from eca_deploy.calibration.quantize import QuantizeConfig, quantize
from eca_deploy.cli.main import main
from eca_deploy.errors import DataError
from test_quantize_digits import _q_scales


@pytest.fixture(scope="module")
def clean(digits, tmp_path_factory):
    """A fresh INT8 run that filled a cache: (config, result, cache text)."""
    out = tmp_path_factory.mktemp("cache")
    cfg = dict(onnx=digits.onnx, calib_data=digits.calib_dir, calib_method="minmax", calib_count=48,
               check_count=16, calib_cache=out / "ranges.json")
    result = quantize(QuantizeConfig(output=out / "clean.onnx", **cfg))
    assert result.calibration["cached"] is False
    return cfg, result, (out / "ranges.json").read_text()


def _poison(text: str, key_method: str, change) -> str:
    payload = json.loads(text)
    for key, entry in payload["entries"].items():
        if key.endswith("|" + key_method):
            change(entry["ranges"])
    return json.dumps(payload)


def _first(ranges):
    return ranges[sorted(ranges)[0]]


POISONS = {
    "nan": lambda r: _first(r).update(amax=float("nan")),
    "zero": lambda r: _first(r).update(amax=0.0),
    "negative": lambda r: [v.update(amax=-1.0) for v in r.values()],
    "inf": lambda r: _first(r).update(amax=float("inf"), max=float("inf")),
    "1e308": lambda r: [v.update(amax=1e308, max=1e308) for v in r.values()],
    "above max": lambda r: _first(r).update(amax=1e6),
    "string": lambda r: _first(r).update(amax="big"),
}  # an entry lacking tensors is completed, not ignored: test_cache_targets.py


# one poison in the default tier; each of the others is two more quantize runs
@pytest.mark.parametrize("poison", [p if p == "nan" else pytest.param(p, marks=pytest.mark.slow) for p in POISONS])
def test_poisoned_entry_is_ignored_said_and_recalibrated(clean, tmp_path, poison):
    cfg, fresh, text = clean
    cache = tmp_path / "ranges.json"
    cache.write_text(_poison(text, "minmax", POISONS[poison]))
    result = quantize(QuantizeConfig(output=tmp_path / "m.onnx", **{**cfg, "calib_cache": cache}))
    assert result.calibration["cached"] is False
    note = result.calibration["cache_ignored"]
    assert note.startswith(f"calibration cache {cache} ignored: ") and note.endswith("; recalibrated")
    assert "\n" not in note
    # The model is the one a clean calibration gives (main: cosine 0.66, top-1 agreement 12.5%) ...
    assert _q_scales(result.path) == _q_scales(fresh.path)
    assert result.parity["top1_agreement"] == fresh.parity["top1_agreement"]
    # ... and the entry is repaired: the next run uses it.
    again = quantize(QuantizeConfig(output=tmp_path / "n.onnx", **{**cfg, "calib_cache": cache}))
    assert again.calibration["cached"] is True and again.calibration["cache_ignored"] is None


def test_quantize_cli_says_the_ignored_entry_in_one_line(clean, tmp_path, capsys):
    cfg, _, text = clean
    cache = tmp_path / "ranges.json"
    cache.write_text(_poison(text, "minmax", POISONS["zero"]))
    assert main(["quantize", "--onnx", str(cfg["onnx"]), "--calib-data", str(cfg["calib_data"]),
                 "--calib-method", "minmax", "--calib-count", "48", "--check-count", "16",
                 "--calib-cache", str(cache), "--output", str(tmp_path / "m.onnx")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "ignored" in line]
    assert len(lines) == 1 and "amax 0 is not > 0" in lines[0]


def test_a_cache_that_breaks_the_model_is_named(clean, tmp_path, monkeypatch):
    """Ranges that pass every check but still make the INT8 model output NaN: the error names the cache."""
    cfg, _, text = clean
    cache = tmp_path / "ranges.json"
    cache.write_text(_poison(text, "minmax", POISONS["inf"]))
    monkeypatch.setattr(cache_module, "range_problem", lambda r: None)  # as if a check missed this poison
    # FP32 glue: FP16 glue would clamp the infinite scale to 65504 (finite, merely wrong outputs)
    with pytest.raises(DataError, match=f"calibration cache {cache}.*--no-calib-cache"):
        quantize(QuantizeConfig(output=tmp_path / "m.onnx", high_precision="fp32", **{**cfg, "calib_cache": cache}))
    assert not (tmp_path / "m.onnx").exists()


def test_valid_ranges_pass_the_check(clean):
    _, _, text = clean
    for entry in json.loads(text)["entries"].values():
        for r in entry["ranges"].values():
            assert cache_module.range_problem(cache_module.TensorRange(r["min"], r["max"], r["amax"])) is None
