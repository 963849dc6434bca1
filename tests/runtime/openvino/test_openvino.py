"""OpenVINO: IR export verified against PyTorch, the backend in parity and bench on the trained digits model,
FP32 really computed in FP32, and the one-line error without openvino."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from eca_deploy.artifacts import read_manifest, sha256_file
from eca_deploy.data.sources import load_dataset
from eca_deploy.cli.main import main
from eca_deploy.errors import MissingDependencyError
from eca_deploy.export.onnx_export import ExportConfig
from eca_deploy.precisions import ir_precision
from eca_deploy.runtime.registry import open_backend, parse_spec
from eca_deploy.runtime.harness.report import validate_report


@pytest.fixture(scope="module")
def ov():
    return pytest.importorskip("openvino")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def irs(ov, digits, tmp_path_factory):
    """The digits model as IR, FP32 and with FP16 weights, as the export command writes them; both IRs come
    from one ONNX export (write_ir is export_openvino's second step), which is most of the time."""
    from eca_deploy.export.openvino_export import export_openvino, write_ir
    from eca_deploy.models import load_model

    out = tmp_path_factory.mktemp("ir")
    cfg = ExportConfig(model=digits.model, weights=str(digits.checkpoint), out_dir=str(out), imgsz=digits.imgsz)
    loaded = load_model(digits.model, digits.checkpoint)
    fp32 = export_openvino(cfg, loaded=loaded)
    return fp32, write_ir(fp32.onnx, loaded, cfg, fp16_weights=True)


def val_images(digits, count=64):
    return next(load_dataset(digits.val_dir, digits.imgsz, count=count).batches(count))


def test_fp32_artifacts_are_compiled_in_fp32_and_match_onnxruntime(ov, digits):
    """The pitfall: left alone, the CPU plugin picks bf16 on CPUs with AMX / AVX-512 BF16."""
    images, labels = val_images(digits)
    ort = open_backend(str(digits.onnx), provider="cpu", threads=1)
    backend = open_backend(f"openvino:{digits.onnx}", threads=1)
    try:
        assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        assert backend.inference_precision == "f32" and backend.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        ov_out, ort_out = backend.infer(images), ort.infer(images)
        assert ov_out.dtype == np.float32 and ov_out.shape == (64, digits.num_classes)
        np.testing.assert_allclose(ov_out, ort_out, atol=1e-4, rtol=1e-4)
        assert np.mean(np.argmax(ov_out, 1) == labels) > 0.8
    finally:
        backend.close()
        ort.close()
    core = ov.Core()
    if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):  # the control: what the default does here
        default = core.compile_model(str(digits.onnx), "CPU", {"INFERENCE_NUM_THREADS": 1})
        assert default.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
        assert np.abs(default(images)[0] - ort_out).max() > 1e-3


def test_ir_export_is_verified_and_described(digits, irs):
    fp32, fp16 = irs
    manifest = read_manifest(fp32.xml_path)
    assert manifest["format"] == "openvino" and manifest["precision"] == "fp32"
    assert manifest["parity"]["openvino"]["max_abs"] <= manifest["parity"]["openvino"]["limit"] <= 1e-4 * 5
    assert manifest["bin"]["sha256"] == sha256_file(fp32.bin_path)
    assert manifest["source_onnx"]["sha256"] == sha256_file(fp32.onnx.onnx_path)
    assert manifest["num_classes"] == digits.num_classes and manifest["versions"]["openvino"]
    assert fp16.parity["min_cosine"] >= 0.9999 and read_manifest(fp16.xml_path)["weights_compression"] == "fp16"
    # FP16 weights: about half the file; the graph says so even without its manifest
    assert fp16.bin_path.stat().st_size < 0.55 * fp32.bin_path.stat().st_size
    assert ir_precision(fp16.xml_path) == "fp16" and ir_precision(fp32.xml_path) == "fp32"
    assert not [p for p in fp32.xml_path.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    artifact = parse_spec(str(fp32.xml_path))
    assert (artifact.format, artifact.precision()) == ("OpenVINO IR", ("fp32", "manifest"))
    assert artifact.size_mb == pytest.approx((fp32.xml_path.stat().st_size + fp32.bin_path.stat().st_size) / 2**20,
                                             abs=0.01)
    # FP16 weights are converted back before use: the graph computes in f32
    backend = open_backend(str(fp16.xml_path), threads=1)
    try:
        assert backend.inference_precision == "f32"
    finally:
        backend.close()


def test_parity_passes_on_openvino_artifacts(digits, irs, tmp_path, capsys):
    fp32, fp16 = irs
    out = tmp_path / "parity.json"
    code, stdout, _ = run(capsys, "parity", "--reference", f"torch:{digits.model}:{digits.checkpoint}",
                          "--candidate", str(fp32.xml_path), "--candidate", str(fp16.xml_path),
                          "--candidate", f"openvino:{digits.onnx}", "--data", str(digits.val_dir), "--count", "200",
                          "--threads", "1", "--output", str(out))
    assert code == 0, stdout
    ref, *rows = validate_report(json.loads(out.read_text()))["rows"]
    assert [(r["artifact"], r["format"], r["precision"], r["backend"], r["status"]) for r in rows] == [
        (fp32.xml_path.name, "OpenVINO IR", "fp32", "openvino-cpu", "pass"),
        (fp16.xml_path.name, "OpenVINO IR", "fp16", "openvino-cpu", "pass"),
        (f"openvino:{digits.onnx.name}", "ONNX", "fp32", "openvino-cpu", "pass")]
    for row in rows:
        assert row["parity"]["top1"] == pytest.approx(ref["parity"]["top1"], abs=0.01)
    # OpenVINO's FP32 within FP32's own error (the PyTorch reference's float32-vs-float64 gap, with margin)
    rounding = next(c for c in rows[0]["parity"]["checks"] if c["check"] == "max error / logit scale")
    assert rounding["passed"] and rounding["limit"] < 1e-4 and rows[0]["parity"]["max_abs"] < 1e-3


def test_bench_takes_ir_and_onnx_with_either_hint(digits, irs, tmp_path, capsys):
    for spec, hint in ((str(irs[0].xml_path), "latency"), (f"openvino:{digits.onnx}", "throughput")):
        out = tmp_path / f"{hint}.json"
        code, stdout, _ = run(capsys, "bench", spec, "--batch-sizes", "1,4", "--iterations", "3", "--warmup", "1",
                              "--threads", "1", "--ov-hint", hint, "--output", str(out))
        assert code == 0, stdout
        (row,) = validate_report(json.loads(out.read_text()))["rows"]
        assert row["status"] == "measured" and row["bench"]["imgsz"] == digits.imgsz
        assert row["backend"] == ("openvino-cpu" if hint == "latency" else "openvino-cpu-throughput")
        assert [e["batch"] for e in row["bench"]["batches"]] == [1, 4]


def test_bench_results_of_one_file_on_two_runtimes_do_not_collide():
    from eca_deploy.cli.bench import default_output
    from eca_deploy.runtime.registry import Artifact

    artifacts = [Artifact("m/a.onnx", "onnx", Path("m/a.onnx")), Artifact("m/a.xml", "openvino", Path("m/a.xml")),
                 Artifact("openvino:m/a.onnx", "openvino", Path("m/a.onnx"))]
    outputs = {default_output(artifact) for artifact in artifacts}
    assert outputs == {Path("m/bench-a.json"), Path("m/bench-a.openvino.json"), Path("m/bench-a.ir.json")}


def test_throughput_hint_splits_a_batch_into_parallel_requests_with_the_same_logits(ov, digits):
    images, _ = val_images(digits, 9)
    latency = open_backend(f"openvino:{digits.onnx}", threads=2)
    throughput = open_backend(f"openvino:{digits.onnx}", threads=2, ov_hint="throughput")
    try:
        assert str(throughput.compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
        assert int(throughput.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) >= 2  # 9 images, 2+ slices
        np.testing.assert_allclose(throughput.infer(images), latency.infer(images), atol=1e-5, rtol=1e-5)
    finally:
        latency.close()
        throughput.close()


@pytest.mark.slow
def test_throughput_bench_at_batch_1_and_8_ends_every_time(ov, tmp_path):
    """A Python callback on the request queue deadlocked close() in about half the runs on an ECA-ResNet-18 IR
    (the workers wanted the GIL while the compiled model was dropped with it held; 5 of 8 runs hung here before
    the fix): bench it repeatedly, each run in a subprocess under a timeout."""
    import subprocess

    from eca_deploy.export.openvino_export import export_openvino

    ir = export_openvino(ExportConfig(model="eca_resnet18", out_dir=str(tmp_path), imgsz=64, num_classes=10))
    command = [sys.executable, "-m", "eca_deploy.cli.main", "bench", str(ir.xml_path), "--batch-sizes", "1,8",
               "--threads", "4", "--ov-hint", "throughput", "--duration", "0.3", "--warmup", "2"]
    for attempt in range(6):
        out = tmp_path / f"run{attempt}.json"
        try:
            done = subprocess.run([*command, "--output", str(out)], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"bench --ov-hint throughput hung in run {attempt + 1} of 6")
        assert done.returncode == 0, done.stderr
        (row,) = validate_report(json.loads(out.read_text()))["rows"]
        assert [e["batch"] for e in row["bench"]["batches"]] == [1, 8]


def test_without_openvino_one_line_install_hint(digits, tmp_path, capsys, monkeypatch):
    from eca_deploy.pipeline import openvino_skip_reason

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"OpenVINO .* is not installed: pip install 'eca-deploy\[openvino\]'"):
        open_backend(f"openvino:{digits.onnx}")
    code, _, err = run(capsys, "bench", f"openvino:{digits.onnx}", "--output", str(tmp_path / "b.json"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "eca-deploy[openvino]" in err
    code, _, err = run(capsys, "pipeline", "--model", digits.model, "--weights", str(digits.checkpoint),
                       "--imgsz", str(digits.imgsz), "--openvino", "--output", str(tmp_path / "p"))
    assert code == 2 and "eca-deploy[openvino]" in err and not list((tmp_path / "p").glob("*.onnx"))
    assert "is not installed" in openvino_skip_reason(None)  # the default leaves the rows out instead
    assert openvino_skip_reason(False) == "--no-openvino"


def test_bad_openvino_specs(ov, tmp_path, capsys):
    xml = tmp_path / "model.xml"
    xml.write_text("<net/>")
    code, _, err = run(capsys, "bench", str(xml), "--output", str(tmp_path / "b.json"))
    assert code == 2 and "has no weights file model.bin" in err
    code, _, err = run(capsys, "bench", f"openvino:{tmp_path / 'm.plan'}", "--output", str(tmp_path / "b.json"))
    assert code == 2 and "OpenVINO runs a .onnx file or an IR .xml" in err
    (tmp_path / "model.bin").write_bytes(b"\0" * 8)
    code, _, err = run(capsys, "bench", str(xml), "--output", str(tmp_path / "b.json"))
    assert code == 2 and "OpenVINO cannot load" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_export_command_writes_the_ir(ov, tmp_path, capsys):
    code, stdout, _ = run(capsys, "export", "--model", "eca_resnet18", "--imgsz", "32", "--format", "openvino",
                          "--fp16-weights", "--output", str(tmp_path))
    assert code == 0, stdout
    assert "eca_resnet18.fp16.xml + eca_resnet18.fp16.bin" in stdout and "worst cosine" in stdout
    assert read_manifest(tmp_path / "eca_resnet18.fp16.xml")["precision"] == "fp16"
    assert read_manifest(tmp_path / "eca_resnet18.onnx")["stage"] == "export"  # the ONNX it came from
    code, _, err = run(capsys, "export", "--model", "eca_resnet18", "--fp16-weights", "--output", str(tmp_path))
    assert code == 2 and "--fp16-weights applies to --format openvino" in err


def _onnx_copy(digits, folder):
    """The digits ONNX (and its manifest) in ``folder``, to name by a relative path."""
    from eca_deploy.artifacts import manifest_path

    folder.mkdir()
    copy = folder / digits.onnx.name
    copy.write_bytes(digits.onnx.read_bytes())
    manifest_path(copy).write_bytes(manifest_path(digits.onnx).read_bytes())
    return copy


def test_parity_writes_its_default_output_beside_an_openvino_candidates_file(ov, digits, tmp_path, monkeypatch,
                                                                                capsys):
    """`--candidate openvino:models/m.onnx` without --output: parity.json goes in models/, where the file is; the
    raw spec's parent was a folder named "openvino:models" made in the working folder."""
    monkeypatch.chdir(tmp_path)
    copy = _onnx_copy(digits, tmp_path / "models")
    spec = f"openvino:models/{copy.name}"
    code, stdout, _ = run(capsys, "parity", "--reference", f"models/{copy.name}", "--candidate", spec,
                          "--count", "4", "--threads", "1")
    assert code == 0, stdout
    assert (tmp_path / "models" / "parity.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_a_saved_reference_run_opens_openvino_candidates_with_the_ov_hint(ov, digits, tmp_path, capsys):
    """--ov-hint reached the candidates when parity ran its reference, and was dropped against a saved one."""
    ref = tmp_path / "ref.npz"
    common = ["--count", "4", "--threads", "1", "--imgsz", str(digits.imgsz)]
    code, stdout, err = run(capsys, "parity", "--reference", str(digits.onnx), "--save-reference", str(ref), *common)
    assert code == 0, err
    out = tmp_path / "parity.json"
    code, stdout, err = run(capsys, "parity", "--reference", str(ref), "--candidate", f"openvino:{digits.onnx}",
                          "--ov-hint", "throughput", "--output", str(out), *common)
    assert code == 0, err
    reference, candidate = json.loads(out.read_text())["rows"]
    assert (reference["backend"], candidate["backend"]) == ("onnxruntime-cpu", "openvino-cpu-throughput")
