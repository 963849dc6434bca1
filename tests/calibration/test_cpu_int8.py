"""INT8 on x86 CPUs with and without VNNI: 7-bit weights by default on the cpu target, 8 with --cpu-vnni.

This suite runs on whichever CPU the machine has (the pytest header names its features). Saturation is a
property of AVX2-only CPUs, so it is emulated here in numpy, the way vpmaddubsw computes, and the warnings
are checked against a fake /proc/cpuinfo of such a CPU.
"""

import contextlib
import io
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from eca_deploy.artifacts import read_manifest
from eca_deploy.calibration.quantize import QuantizeConfig, quantize
from eca_deploy.cli.main import main
from eca_deploy.errors import QuantizationError
from eca_deploy.graph.cpu import (SAFE_WEIGHT_MAX, cpu_features, describe_features, int8_weight_max, lacks_vnni,
                                  weight_bits)
from eca_deploy.pipeline import explain_saturation
from eca_deploy.runtime.harness import device
from eca_deploy.runtime.harness.rows import ReportRow

# The flags lines of real CPUs (abridged to the flags that matter, in /proc/cpuinfo's order).
ZEN2 = "model name\t: AMD EPYC 7742 64-Core Processor\nflags\t\t: fpu sse4_1 sse4_2 avx f16c fma avx2 sha_ni\n"
ICELAKE = "flags\t\t: fpu avx fma avx2 avx512f avx512dq avx512bw avx512_vnni avx512_bitalg\n"
ALDERLAKE = "flags\t\t: fpu avx fma avx2 avx_vnni\n"
SAPPHIRE = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def test_cpu_features_from_cpuinfo():
    assert cpu_features(ZEN2) == {"vnni": False, "amx": False, "avx512": False, "avx2": True}
    assert cpu_features(ICELAKE) == {"vnni": True, "amx": False, "avx512": True, "avx2": True}
    assert cpu_features(ALDERLAKE)["vnni"] is True and cpu_features(ALDERLAKE)["avx512"] is False
    assert cpu_features(SAPPHIRE) == {"vnni": True, "amx": True, "avx512": True, "avx2": True}
    assert cpu_features(ARM) == {"vnni": None, "amx": None, "avx512": None, "avx2": None}
    assert [lacks_vnni(cpu_features(t)) for t in (ZEN2, ICELAKE, ALDERLAKE, SAPPHIRE, ARM)] == \
        [True, False, False, False, False]
    assert describe_features(cpu_features(ZEN2)) == "AVX2; no AVX-512, VNNI, AMX"
    assert describe_features(cpu_features(SAPPHIRE)) == "AVX2, AVX-512, VNNI, AMX"


def test_device_record_and_doctor_carry_the_cpu_features(tmp_path):
    from eca_deploy.runtime.harness.doctor import _machine_checks

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(ZEN2)
    described = device.describe_device(probe=device.Probe(tmp_path, lambda argv: None))
    assert described["cpu"]["features"] == cpu_features(ZEN2)
    line = next(c.line() for c in _machine_checks(device.machine_facts(device.Probe(tmp_path, lambda argv: None)))
                if c.name == "CPU features")
    assert "AVX2; no AVX-512, VNNI, AMX" in line and "--cpu-vnni" in line


def _vpmaddubsw_dot(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """u8 x s8 dot products as AVX2's vpmaddubsw + vpmaddwd compute them: each adjacent pair of products is
    summed and saturated to int16, then the pairs are summed in int32."""
    products = activations.astype(np.int32) * weights.astype(np.int32)
    pairs = products[..., 0::2] + products[..., 1::2]
    return np.clip(pairs, -2**15, 2**15 - 1).sum(axis=-1)


@pytest.mark.parametrize("qmax,saturates", [(63, False), (SAFE_WEIGHT_MAX, False), (127, True)])
def test_int16_pair_sums_saturate_only_beyond_seven_bit_weights(qmax, saturates):
    """The worst case: activations at 255 against weights at +-qmax; 2 x 255 x 64 = 32640 still fits int16."""
    rng = np.random.default_rng(0)
    activations = np.concatenate([np.full((4, 64), 255), rng.integers(0, 256, (60, 64))]).astype(np.uint8)
    signs = rng.choice([-1, 1], (16, 64))
    weights = np.concatenate([signs[:8] * qmax, rng.integers(-qmax, qmax + 1, (8, 64))]).astype(np.int8)
    exact = activations.astype(np.int64) @ weights.T.astype(np.int64)
    emulated = _vpmaddubsw_dot(activations[:, None, :], weights[None, :, :])
    assert np.array_equal(emulated, exact) is not saturates


@pytest.fixture(scope="module")
def cpu_int8(digits, tmp_path_factory):
    """The digits model's cpu-target INT8 with 7-bit weights (the default, through the API) and with --cpu-vnni's
    8 bits (through the command line, whose printout is kept as "printed")."""
    out = tmp_path_factory.mktemp("cpu_int8")
    common = dict(onnx=digits.onnx, calib_data=digits.calib_dir, val_data=digits.val_dir, calib_method="minmax",
                  calib_count=64, check_count=64, target="cpu", calib_cache=out / "cache.json")
    seven = quantize(QuantizeConfig(output=out / "w7.onnx", **common))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = main(["quantize", "--onnx", str(digits.onnx), "--calib-data", str(digits.calib_dir), "--val-data",
                     str(digits.val_dir), "--calib-method", "minmax", "--calib-count", "64", "--check-count", "64",
                     "--target", "cpu", "--cpu-vnni", "--calib-cache", str(out / "cache.json"),
                     "--output", str(out / "w8.onnx")])
    assert code == 0, printed.getvalue()
    return {7: seven, 8: SimpleNamespace(path=out / "w8.onnx", printed=printed.getvalue())}


def test_quantize_prints_the_weight_bits_and_what_it_judged_on(cpu_int8):
    printed = cpu_int8[8].printed
    assert "INT8 for cpu (minmax calibration), 8-bit weights (--cpu-vnni)" in printed
    assert "judged on the model's math (onnxruntime without its Q/DQ fusion)" in printed
    differ = read_manifest(cpu_int8[8].path)["runtime"]["answers_differ"]
    assert ("this CPU's onnxruntime" in printed) is (differ > 0)


def test_cpu_target_weights_are_seven_bit_unless_the_cpu_has_vnni(cpu_int8):
    for bits, result in cpu_int8.items():
        model = onnx.load(str(result.path))
        assert weight_bits(model) == bits
        assert int8_weight_max(model) == {7: 63, 8: 127}[bits]  # every channel's max |w| maps to the top
        quantization = read_manifest(result.path)["quantization"]
        assert quantization["weight_bits"] == bits and quantization["cpu_vnni"] is (bits == 8)
    # both judged on the model's math, and this CPU's own onnxruntime result recorded beside it
    for result in cpu_int8.values():
        manifest = read_manifest(result.path)
        assert "session.disable_quant_qdq" in manifest["evaluation"]["judged_on"]
        runtime = manifest["runtime"]
        assert runtime["cpu"] == device.this_cpu_features()
        assert runtime["saturates"] is (lacks_vnni(runtime["cpu"]) and result is cpu_int8[8])
        assert 0 <= runtime["answers_differ"] <= manifest["accuracy"]["images"]


def test_cpu_vnni_is_for_the_cpu_target(digits, tmp_path):
    with pytest.raises(QuantizationError, match="--cpu-vnni is for --target cpu"):
        quantize(QuantizeConfig(onnx=digits.onnx, calib_data=digits.calib_dir, cpu_vnni=True,
                                output=tmp_path / "x.onnx"))


def test_inspect_says_which_cpus_the_weights_assume(cpu_int8, capsys):
    for bits, expected in ((7, "INT8 weights: 7-bit (|q| <= 63), VNNI not assumed"),
                           (8, "INT8 weights: 8-bit (|q| up to 127), VNNI assumed (quantized with --cpu-vnni)")):
        assert main(["inspect", str(cpu_int8[bits].path)]) == 0
        assert expected in capsys.readouterr().out


def test_parity_and_bench_warn_where_this_cpu_would_saturate_eight_bit_weights(digits, cpu_int8, monkeypatch, capsys):
    """On a CPU without VNNI (a fake Zen 2 cpuinfo), the 8-bit file gets a warning on onnxruntime and OpenVINO;
    the 7-bit one does not, and on a VNNI CPU neither does."""
    zen2, icelake = cpu_features(ZEN2), cpu_features(ICELAKE)
    seven, eight = cpu_int8[7].path, cpu_int8[8].path
    assert device.int8_cpu_warning(seven, "onnxruntime-cpu", zen2) is None
    assert device.int8_cpu_warning(eight, "onnxruntime-cpu", icelake) is None
    assert device.int8_cpu_warning(eight, "onnxruntime-cuda", zen2) is None
    for backend, runtime in (("onnxruntime-cpu", "onnxruntime"), ("openvino-cpu-throughput", "OpenVINO")):
        assert f"{runtime}'s u8s8 kernels saturate" in device.int8_cpu_warning(eight, backend, zen2)

    monkeypatch.setattr(device, "this_cpu_features", lambda: zen2)
    code = main(["parity", "--reference", str(digits.onnx), "--candidate", str(eight), "--candidate", str(seven),
                 "--data", str(digits.val_dir), "--count", "16", "--precision", "int8"])
    err = capsys.readouterr().err
    assert code in (0, 1)
    assert f"{eight.name} has 8-bit INT8 weights and this CPU has no VNNI" in err
    assert f"{seven.name} has 8-bit" not in err
    for path, warned in ((eight, True), (seven, False)):
        assert main(["bench", str(path), "--batch-sizes", "1", "--iterations", "2", "--warmup", "0",
                     "--output", str(path.with_suffix(".bench.json"))]) == 0
        assert ("this CPU has no VNNI" in capsys.readouterr().err) is warned


def test_quantize_says_saturation_only_of_a_file_whose_session_runs_integer_kernels(digits, cpu_int8, tmp_path,
                                                                                   monkeypatch):
    """On a CPU without VNNI (a fake Zen 2 cpuinfo) the 8-bit cpu-target file saturates; an FP16-glue tensorrt
    file, which onnxruntime runs node by node in float, cannot, though its weights use all 8 bits. Seen under
    QEMU's emulated AVX2 CPU, where test_int8_within_one_point failed on that claim."""
    from eca_deploy.calibration.search import evaluate
    from eca_deploy.data.sources import load_dataset

    glue = quantize(QuantizeConfig(onnx=digits.onnx, calib_data=digits.calib_dir, calib_method="minmax",
                                   calib_count=32, check_count=16, output=tmp_path / "glue.onnx",
                                   calib_cache=tmp_path / "cache.json"))  # --target tensorrt: FP16 glue
    monkeypatch.setattr(evaluate, "this_cpu_features", lambda: cpu_features(ZEN2))
    data = load_dataset(digits.val_dir, digits.imgsz, 16, 0)
    for path, saturates in ((cpu_int8[8].path, True), (cpu_int8[7].path, False), (glue.path, False)):
        model = onnx.load(str(path))
        ref = evaluate.reference_run(model, data, 8, "images", held_out=True)
        assert weight_bits(model) == (7 if path == cpu_int8[7].path else 8)
        assert evaluate.runtime_check(model, ref.logits, ref)["saturates"] is saturates, path.name


def test_a_row_failing_from_saturation_says_why():
    rows = [ReportRow("m.int8.onnx", "/a/m.int8.onnx", "ONNX", "int8", "onnxruntime-cpu", "pass"),
            ReportRow("m.int8.onnx", "openvino:/a/m.int8.onnx", "ONNX", "int8", "openvino-cpu", "fail",
                      "top-1 agreement 84.38% < 90.00%"),
            ReportRow("m.fp16.onnx", "openvino:/a/m.fp16.onnx", "ONNX", "fp16", "openvino-cpu", "fail", "x")]
    explain_saturation(rows, {"openvino:/a/m.int8.onnx": "warning"})
    assert rows[1].reason == ("top-1 agreement 84.38% < 90.00%; this file passes on onnxruntime-cpu but fails on "
                              "openvino-cpu because this CPU has no VNNI: its u8s8 kernels saturate the 8-bit "
                              "weights in int16 (quantize --target cpu, 7-bit weights, does not)")
    assert rows[0].reason == "" and rows[2].reason == "x"
