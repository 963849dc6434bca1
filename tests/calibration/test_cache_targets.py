"""One calibration cache for both targets: the second target computes only the tensors the first did not."""

import json

import pytest

from eca_deploy.calibration.quantize import QuantizeConfig, quantize
from eca_deploy.cli.main import main
from test_quantize_digits import _q_scales


def _cfg(digits, cache, method="minmax"):
    return dict(onnx=digits.onnx, calib_data=digits.calib_dir, calib_method=method, calib_count=48, check_count=16,
                calib_cache=cache)


def _tensors(cache, method) -> set[str]:
    entry = next(e for key, e in json.loads(cache.read_text())["entries"].items() if key.endswith("|" + method))
    return set(entry["ranges"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["minmax", "entropy"])  # a plain pass, and a histogram pass (all methods)
def test_cpu_after_tensorrt_adds_its_tensors_to_the_same_entries(digits, tmp_path, method):
    cache = tmp_path / "ranges.json"
    quantize(QuantizeConfig(output=tmp_path / "t.onnx", target="tensorrt", **_cfg(digits, cache, method)))
    before = _tensors(cache, method)
    cpu = quantize(QuantizeConfig(output=tmp_path / "c.onnx", target="cpu", **_cfg(digits, cache, method)))
    fresh = quantize(QuantizeConfig(output=tmp_path / "f.onnx", target="cpu",
                                    **_cfg(digits, tmp_path / "fresh.json", method)))
    assert cpu.calibration["cached"] is False and cpu.calibration["cache_ignored"] is None
    assert 0 < cpu.calibration["recomputed"] == len(_tensors(cache, method) - before) < cpu.calibration["tensors"]
    # the completed entries give the model a full calibration gives, scale for scale
    assert _q_scales(cpu.path) == _q_scales(fresh.path)
    assert cpu.parity["top1_agreement"] == fresh.parity["top1_agreement"]
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == len(json.loads((tmp_path / "fresh.json").read_text())["entries"])  # no second set
    for target, name in (("cpu", "c2.onnx"), ("tensorrt", "t2.onnx")):  # both targets now read it whole
        again = quantize(QuantizeConfig(output=tmp_path / name, target=target, **_cfg(digits, cache, method)))
        assert again.calibration["cached"] is True


def test_cli_says_what_it_computes_before_the_pass(digits, tmp_path, capsys):
    cache = tmp_path / "ranges.json"
    base = ["quantize", "--onnx", str(digits.onnx), "--calib-data", str(digits.calib_dir), "--calib-method",
            "minmax", "--calib-count", "48", "--check-count", "16", "--calib-cache", str(cache)]
    assert main([*base, "--target", "tensorrt", "--output", str(tmp_path / "t.onnx")]) == 0
    capsys.readouterr()
    assert main([*base, "--target", "cpu", "--output", str(tmp_path / "c.onnx")]) == 0
    out, err = capsys.readouterr()
    first = next(line for line in err.splitlines() if line.startswith("calibrating"))
    assert first.startswith("calibrating ") and " tensors (the others cached in ranges.json): 0/" in first, first
    assert "the others cached in" in next(line for line in out.splitlines() if "calibration:" in line)
    assert "ignored" not in err and "recalibrated" not in err

