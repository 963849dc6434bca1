"""Hostile inputs and faults (issue 11, items 10-23): each is the user's mistake or the machine's state,
so each must end in one line on stderr and exit 2 (or simply work), never an internal error.

Every hostile file is generated here, by the test that uses it; nothing binary is committed.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from eca_deploy.errors import first_line
from eca_deploy.models import create_model
from test_cli import assert_one_line_error, leftovers, run_cli

REPO = Path(__file__).resolve().parents[2]


def small_checkpoint(path: Path, transform=None) -> Path:
    state = create_model("eca_resnet18", num_classes=10).state_dict()
    if transform:
        state = transform(state)
    torch.save(state, path)
    return path


# --- the first_line helper -------------------------------------------------------------------------------

def test_first_line_of_empty_and_blank_messages():
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("\n  \n")) == "ValueError"
    assert first_line(OSError("\n  second line first\nthird")) == "second line first"


# --- 12. an unreadable checkpoint ------------------------------------------------------------------------

def test_unreadable_checkpoint_is_one_line(tmp_path, capsys):
    """A real EACCES, not a mock: as a normal user chmod 000 is enough; as root (CI) the CLI runs in a
    subprocess whose capability bounding set drops DAC override, so root's bypass of file modes is gone."""
    weights = small_checkpoint(tmp_path / "w.pth")
    weights.chmod(0)
    argv = ["export", "--model", "eca_resnet18", "--weights", str(weights), "--output", str(tmp_path / "o")]
    if os.geteuid() != 0:
        code, _, err = run_cli(capsys, *argv)
    else:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        proc = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
                               "eca_deploy.cli.main", *argv], cwd=REPO, capture_output=True, text=True)
        code, err = proc.returncode, proc.stderr
    assert_one_line_error(code, err, f"cannot read weights file {weights}: Permission denied")
    assert leftovers(tmp_path / "o") == []


# --- 17. NaN / Inf and integer weights -------------------------------------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_named_at_load(tmp_path, capsys, bad):
    def poison(state):
        state["layer2.0.conv1.weight"][0, 0, 0, 0] = bad
        return state

    weights = small_checkpoint(tmp_path / "w.pth", poison)
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(weights),
                           "--output", str(tmp_path / "o"), "--imgsz", "32")
    assert_one_line_error(code, err, "hold NaN or infinite values in 1 tensors (layer2.0.conv1.weight)")
    assert "not faithful" not in err and "Warning" not in err
    assert leftovers(tmp_path / "o") == []


def test_integer_safetensors_are_refused(tmp_path, capsys):
    state = create_model("eca_resnet18", num_classes=10).state_dict()
    path = tmp_path / "w.safetensors"
    save_file({k: (v * 100).to(torch.int32) if v.is_floating_point() else v for k, v in state.items()}, str(path))
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(path),
                           "--output", str(tmp_path / "o"), "--imgsz", "32")
    assert_one_line_error(code, err, "integer tensors where the model has floating-point ones (conv1.weight int32")


# --- 23. a directory where a file is expected ------------------------------------------------------------

def test_directory_as_weights_says_directory(tmp_path, capsys):
    folder = tmp_path / "weights.pth"
    folder.mkdir()
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--weights", str(folder),
                           "--output", str(tmp_path / "o"))
    assert_one_line_error(code, err, f"weights file {folder} is a directory, not a file")


@pytest.mark.parametrize("name, command", [("model.plan", "bench"), ("model.engine", "bench"),
                                           ("model.onnx", "bench"), ("model.onnx", "inspect")])
def test_directory_as_model_says_directory(tmp_path, capsys, name, command):
    folder = tmp_path / name
    folder.mkdir()
    argv = ["bench", str(folder)] if command == "bench" else ["inspect", str(folder)]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, f"{folder} is a directory, not a file")


# --- 10. a full disk -------------------------------------------------------------------------------------

@pytest.fixture
def disk_full(monkeypatch):
    """Writes of files whose name contains ``match`` fail as on a full disk (ENOSPC), as the real write would."""
    def install(match: str):
        real = Path.write_bytes

        def write_bytes(self, data):
            if match in self.name:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return install


def assert_disk_full(code, err, folder, name):
    last = err.strip().splitlines()[-1]
    assert code == 2, err
    assert last.startswith(f"eca-deploy: error: no space left in {folder} to write {name} (needs "), last
    assert "MB free); free some space or choose another output folder" in last
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_in_export(tmp_path, capsys, disk_full):
    disk_full("eca_resnet18.onnx")
    out = tmp_path / "o"
    out.mkdir()  # a folder export did not create: it stays (one it creates is removed again on failure)
    code, _, err = run_cli(capsys, "export", "--model", "eca_resnet18", "--num-classes", "10", "--imgsz", "32",
                           "--output", str(out))
    assert_disk_full(code, err, out, "eca_resnet18.onnx")
    assert leftovers(out) == []


def test_full_disk_in_quantize(digits, tmp_path, capsys, disk_full):
    disk_full("m.fp16.onnx")
    code, _, err = run_cli(capsys, "quantize", "--onnx", str(digits.onnx), "--precision", "fp16",
                           "--output", str(tmp_path / "m.fp16.onnx"))
    assert_disk_full(code, err, tmp_path, "m.fp16.onnx")
    assert len(err.strip().splitlines()) == 2  # "quantizing ..." and the error


@pytest.mark.slow  # the whole pipeline, end to end
def test_full_disk_in_pipeline_stops_it(digits, tmp_path, capsys, disk_full):
    disk_full(".fp16.")  # the export fits, the FP16 variant does not
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "pipeline", "--model", digits.model, "--weights", str(digits.checkpoint),
                           "--imgsz", str(digits.imgsz), "--output", str(out), "--precisions", "fp16",
                           "--provider", "cpu", "--device", "cpu", "--threads", "1", "--iterations", "1")
    assert_disk_full(code, err, out, f"{digits.model}.fp16.onnx")  # FP16 is named without a target
    assert not (out / "report.json").exists()


# --- 11. a file name that is not UTF-8 -------------------------------------------------------------------

NON_UTF8 = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes, as an old camera or a Windows share writes them


@pytest.fixture
def non_utf8_folder(digits, tmp_path):
    """A small ImageFolder copy of the digits validation images, one file per class renamed to non-UTF-8 bytes."""
    root = tmp_path / "val"
    for class_dir in sorted(digits.val_dir.iterdir()):
        (root / class_dir.name).mkdir(parents=True)
        files = sorted(class_dir.iterdir())[:3]
        for f in files[1:]:
            shutil.copy(f, root / class_dir.name / f.name)
        shutil.copy(files[0], root / class_dir.name / NON_UTF8)
    return root


def test_non_utf8_file_name_in_quantize(digits, non_utf8_folder, tmp_path, capsys):
    code, out, err = run_cli(capsys, "quantize", "--onnx", str(digits.onnx), "--calib-data", str(non_utf8_folder),
                             "--output", str(tmp_path / "m.int8.onnx"), "--calib-method", "minmax")
    assert code == 0, err
    assert "from 30 images" in out and "skipped" not in out


def test_non_utf8_file_name_in_parity(digits, non_utf8_folder, tmp_path, capsys):
    code, out, err = run_cli(capsys, "parity", "--reference", f"torch:{digits.model}:{digits.checkpoint}",
                             "--candidate", str(digits.onnx), "--data", str(non_utf8_folder), "--device", "cpu",
                             "--provider", "cpu", "--threads", "1", "--output", str(tmp_path / "parity.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "parity.json").read_text())["data"]["samples"] == 30


@pytest.mark.slow  # the whole pipeline, end to end
def test_non_utf8_file_name_in_pipeline(digits, non_utf8_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "pipeline", "--model", digits.model, "--weights", str(digits.checkpoint),
                           "--calib-data", str(non_utf8_folder), "--data", str(non_utf8_folder),
                           "--calib-method", "minmax", "--imgsz", str(digits.imgsz), "--output", str(out),
                           "--precisions", "int8", "--provider", "cpu", "--device", "cpu", "--threads", "1",
                           "--iterations", "1", "--warmup", "0", "--batch-sizes", "1")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["samples"] == 30 and report["data"]["skipped"] == 0


# --- 13. models onnxruntime refuses, or that are not image classifiers ----------------------------------

def tiny_onnx(path: Path, channels: int = 3, size: int = 8, elem_type=None, custom_op: bool = False,
              height: int | str | None = None) -> Path:
    """A small real image classifier: Conv -> [custom op] -> GlobalAveragePool -> Flatten -> 4 logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem_type = elem_type or TensorProto.FLOAT
    rng = np.random.default_rng(0)
    nodes, first = [], "x"
    if elem_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        first = "xf"
    nodes.append(helper.make_node("Conv", [first, "w"], ["c"], pads=[1, 1, 1, 1]))
    if custom_op:
        nodes.append(helper.make_node("Mystery", ["c"], ["m"], domain="com.example"))
    nodes += [helper.make_node("GlobalAveragePool", ["m" if custom_op else "c"], ["p"]),
              helper.make_node("Flatten", ["p"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", elem_type, ["batch", channels, height or size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "w")])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if custom_op else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def random_images(folder: Path, count: int = 4, size: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_quantize_an_unknown_custom_op(tmp_path, capsys, precision):
    model = tiny_onnx(tmp_path / "custom.onnx", custom_op=True)
    code, _, err = run_cli(capsys, "quantize", "--onnx", str(model), "--precision", precision,
                           "--calib-data", str(random_images(tmp_path / "imgs")), "--no-calib-cache")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("eca-deploy: error: onnxruntime cannot load the input model: "), err
    assert "Mystery" in last and "com.example" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.onnx", "imgs"]


def test_bench_an_int64_input_model(tmp_path, capsys):
    from onnx import TensorProto

    model = tiny_onnx(tmp_path / "ids.onnx", elem_type=TensorProto.INT64)
    code, _, err = run_cli(capsys, "bench", str(model), "--provider", "cpu", "--iterations", "1")
    assert_one_line_error(code, err, "ids.onnx takes a int64 ['?', 3, 8, 8] input 'x'; eca-deploy runs image "
                                     "classifiers with one float32 or float16 [N, 3, H, W] input")


def test_parity_with_a_single_channel_candidate(tmp_path, capsys):
    reference = tiny_onnx(tmp_path / "ref.onnx", size=28)
    gray = tiny_onnx(tmp_path / "gray.onnx", channels=1, size=28)
    code, _, err = run_cli(capsys, "parity", "--reference", str(reference), "--candidate", str(gray),
                           "--provider", "cpu", "--output", str(tmp_path / "p.json"))
    assert_one_line_error(code, err, "gray.onnx takes a float32 ['?', 1, 28, 28] input 'x'")
    assert not (tmp_path / "p.json").exists()


def test_a_model_with_one_dynamic_side_is_compared_at_its_fixed_one(tmp_path, capsys):
    """main refused it with "takes Nonex32 inputs but the comparison runs at 224x224": its height is dynamic,
    and its fixed width was not looked at."""
    reference = tiny_onnx(tmp_path / "ref.onnx", size=32)
    tall = tiny_onnx(tmp_path / "tall.onnx", height="h", size=32)  # [batch, 3, h, 32]
    code, _, err = run_cli(capsys, "parity", "--reference", str(reference), "--candidate", str(tall),
                           "--provider", "cpu", "--count", "4", "--output", str(tmp_path / "p.json"))
    assert code == 0, err
    wide = tiny_onnx(tmp_path / "wide.onnx", height="h", size=48)  # [batch, 3, h, 48]: the width differs
    code, _, err = run_cli(capsys, "parity", "--reference", str(reference), "--candidate", str(wide),
                           "--provider", "cpu", "--count", "4", "--imgsz", "32")
    assert_one_line_error(code, err, "wide.onnx takes ?x48 inputs but the comparison runs at 32x32")


# --- 18. external data that is missing or points outside the model's folder ------------------------------

@pytest.mark.parametrize("location, cause", [
    ("gone.data", "should be stored in {folder}/gone.data, but it is not regular file"),
    ("../outside.data", "points outside the directory"),
    ("/etc/passwd", "should be a relative path, but it is an absolute path: /etc/passwd"),
])
def test_external_data_problem_is_named(tmp_path, capsys, location, cause):
    import onnx

    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.data").write_bytes(b"\0" * 4096)
    model = onnx.load(str(tiny_onnx(tmp_path / "tiny.onnx")))
    onnx.save(model, str(folder / "good.onnx"), save_as_external_data=True, location="good.onnx.data",
              size_threshold=0)
    bad = onnx.load(str(folder / "good.onnx"), load_external_data=False)
    for tensor in bad.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(bad, str(folder / "bad.onnx"))
    expected = f"cannot load the external data of {folder / 'bad.onnx'}: "
    for argv in (["inspect", str(folder / "bad.onnx")],
                 ["quantize", "--onnx", str(folder / "bad.onnx"), "--precision", "fp16"]):
        code, _, err = run_cli(capsys, *argv)
        last = err.strip().splitlines()[-1]
        assert code == 2 and last.startswith(f"eca-deploy: error: {expected}"), err
        assert cause.format(folder=folder) in last
    code, out, _ = run_cli(capsys, "inspect", str(folder / "good.onnx"))  # the intact pair still loads
    assert code == 0 and "input x" in out


# --- 14. a malformed manifest beside an artifact ---------------------------------------------------------

ENGINE_MANIFEST = {"artifact": "model.plan", "stage": "build", "precision": "fp16",
                   "profile": {"batch": "1:4:8", "min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [8, 3, 8, 8]}}
BAD_MANIFESTS = {
    "corrupt JSON": ('{"precision": "fp16", "profile": {', "is not readable JSON"),
    "a list": ("[1, 2, 3]", "holds a JSON list, not an object"),
    "non-numeric profile.max": (json.dumps({**ENGINE_MANIFEST, "profile": {"max": ["eight", 3, 8, 8]}}),
                                "\"profile.max\" is not a shape of positive integers ([\"eight\", 3, 8, 8])"),
    "string profile": (json.dumps({**ENGINE_MANIFEST, "profile": "1:4:8"}), "\"profile\" is a str, not a dict"),
    "deep nesting": ("[" * 100_000 + "]" * 100_000, "is not readable JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_malformed_engine_manifest_is_one_line(tmp_path, capsys, case):
    text, message = BAD_MANIFESTS[case]
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"\0" * 64)
    (tmp_path / "model.plan.json").write_text(text)
    code, _, err = run_cli(capsys, "bench", str(engine), "--batch-sizes", "1,4")
    assert_one_line_error(code, err, f"manifest {tmp_path / 'model.plan.json'}")
    assert message in err


def test_an_engine_manifest_of_other_bytes_is_not_read_for_the_batch_limit(tmp_path, capsys):
    """main read "max batch 8" from a manifest whose sha256 names another engine and refused batch 16 by it."""
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"\0" * 64)
    (tmp_path / "model.plan.json").write_text(json.dumps({**ENGINE_MANIFEST, "sha256": "0" * 64}))
    code, _, err = run_cli(capsys, "bench", str(engine), "--batch-sizes", "16")
    assert_one_line_error(code, err, "model.plan.json describes another engine than model.plan (sha256 differs)")
    assert "max batch" not in err


@pytest.mark.parametrize("case", ["corrupt JSON", "a list", "deep nesting"])
def test_malformed_onnx_manifest_is_ignored_in_one_line(tmp_path, capsys, case):
    model = tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "tiny.onnx.json").write_text(BAD_MANIFESTS[case][0])
    code, _, err = run_cli(capsys, "bench", str(model), "--provider", "cpu", "--iterations", "1", "--warmup", "0",
                           "--output", str(tmp_path / "b.json"))
    lines = [line for line in err.splitlines() if "warning" in line]
    assert code == 0, err
    assert len(lines) == 1 and "(the precision is read from the graph)" in lines[0]
    assert json.loads((tmp_path / "b.json").read_text())["rows"][0]["precision"] == "fp32"


# --- 15. report: the whole schema is checked before anything is written ----------------------------------

def valid_report() -> dict:
    from eca_deploy.runtime.harness.bench import latency_stats
    from eca_deploy.runtime.harness.report import new_report
    from eca_deploy.runtime.harness.rows import ReportRow

    entry = {"batch": 1, "clock": "host", "copies": "none (host memory)",
             **latency_stats(np.array([1e-3, 2e-3, 3e-3]), 1)}
    rows = [ReportRow("m.onnx", "/models/m.onnx", "ONNX", "fp32", "onnxruntime-cpu", "pass", size_mb=1.5,
                      parity={"top1": 0.9, "top1_agreement": 1.0}, bench={"imgsz": 32, "batches": [entry]})]
    device = {"label": "CPU A", "cpu": {"model": "CPU A"}, "gpus": [], "warnings": []}
    return new_report("pipeline", device, rows, skipped=[{"step": "TensorRT engines", "reason": "no GPU"}])


BROKEN_REPORTS = {
    "device without label": (lambda r: r["devices"][0].pop("label"), "device 0 has no \"label\""),
    "string size_mb": (lambda r: r["rows"][0].update(size_mb="1.5"),
                       "row 0: \"size_mb\" is a JSON string, expected number or null"),
    "bench entry without p50": (lambda r: r["rows"][0]["bench"]["batches"][0].pop("p50"),
                                "row 0 bench entry 0 has no \"p50\""),
    "string metrics": (lambda r: r["rows"][0]["parity"].update(top1="90%"),
                       "row 0 parity: \"top1\" is a JSON string, expected number or null"),
    "boolean metric": (lambda r: r["rows"][0]["parity"].update(max_abs=True),
                       "row 0 parity: \"max_abs\" is a JSON boolean"),
    "skipped entry without step": (lambda r: r["skipped"][0].pop("step"), "skipped entry 0 has no \"step\""),
    "schema_version true": (lambda r: r.update(schema_version=True), "invalid \"schema_version\" true"),
    "schema_version -3": (lambda r: r.update(schema_version=-3), "invalid \"schema_version\" -3"),
    "no schema_version": (lambda r: r.pop("schema_version"), "has no \"schema_version\"; eca-deploy writes 1"),
    "row that is a list": (lambda r: r["rows"].append([1, 2]), "row 1 is a JSON array, not an object"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_REPORTS))
def test_report_checks_the_whole_schema_and_writes_nothing(tmp_path, capsys, case):
    breakage, message = BROKEN_REPORTS[case]
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(valid_report()))
    report = valid_report()
    breakage(report)
    bad.write_text(json.dumps(report))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "report", str(good), str(bad), "--output", str(out))
    assert_one_line_error(code, err, message)
    assert "upgrade" not in err
    assert leftovers(out) == []
    code, _, err = run_cli(capsys, "report", str(good), "--output", str(out), "--no-plots")  # the valid one renders
    assert code == 0, err


def test_report_survives_absurd_nesting(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text('{"schema": "eca-deploy/report", "rows": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, _, err = run_cli(capsys, "report", str(deep), "--output", str(tmp_path / "out"))
    assert_one_line_error(code, err, f"{deep} is not JSON: maximum recursion depth exceeded")
    assert leftovers(tmp_path / "out") == []


# --- 16. an output that names an existing directory ------------------------------------------------------

def test_quantize_output_that_is_a_directory_writes_nothing(tmp_path, capsys):
    model = tiny_onnx(tmp_path / "tiny.onnx")
    images = random_images(tmp_path / "imgs")
    target = tmp_path / "out.onnx"
    target.mkdir()
    code, _, err = run_cli(capsys, "quantize", "--onnx", str(model), "--calib-data", str(images),
                           "--output", str(target))
    assert err.strip().splitlines()[-1] == \
        f"eca-deploy: error: output {target} is an existing directory; give a file name inside it"
    assert code == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "out.onnx", "tiny.onnx"]
    code, _, err = run_cli(capsys, "quantize", "--onnx", str(model), "--calib-data", str(images),
                           "--output", str(tmp_path / "q.onnx"), "--calib-cache", str(target))
    assert code == 2 and f"output {target} is an existing directory" in err
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("command", ["bench", "parity"])
def test_json_output_that_is_a_directory(tmp_path, capsys, command):
    model = tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "result.json").mkdir()
    argv = (["bench", str(model)] if command == "bench" else
            ["parity", "--reference", str(model), "--candidate", str(model)])
    code, _, err = run_cli(capsys, *argv, "--provider", "cpu", "--output", str(tmp_path / "result.json"))
    assert_one_line_error(code, err, "result.json is an existing directory")


# --- 19. an empty class folder keeps torchvision's numbering ---------------------------------------------

def test_empty_class_folder_keeps_the_numbering(tmp_path, capsys):
    from eca_deploy.data.sources import load_dataset

    for name in ("a", "c"):
        random_images(tmp_path / "data" / name, count=2)
    (tmp_path / "data" / "b").mkdir()
    data = load_dataset(tmp_path / "data", imgsz=8)
    assert data.class_names == ["a", "b", "c"] and data.labels.tolist() == [0, 0, 2, 2]  # torchvision: c is 2
    err = capsys.readouterr().err
    assert err == (f"eca-deploy: warning: {tmp_path / 'data'}: 1 class folder without images: b (label 1); "
                   "every class keeps its label\n")
    load_dataset(tmp_path / "data", imgsz=8)
    assert capsys.readouterr().err == ""  # said once per run, though stages reopen the data


# --- 20. quantize refuses labels the model does not have -------------------------------------------------

def test_quantize_refuses_labels_beyond_the_class_count(tmp_path, capsys):
    model = tiny_onnx(tmp_path / "tiny.onnx")  # 4 classes
    images = random_images(tmp_path / "imgs")
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"imgs/{i}.png {label}\n" for i, label in enumerate([0, 1, 999, 3])))
    for precision in ("int8", "fp16"):
        code, _, err = run_cli(capsys, "quantize", "--onnx", str(model), "--precision", precision,
                               "--calib-data", str(images), "--val-data", str(listing), "--no-calib-cache")
        assert code == 2 and err.strip().splitlines()[-1] == (
            f"eca-deploy: error: {listing} has label 999 but the model outputs 4 classes (labels are class "
            "indices from 0)"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "list.txt", "tiny.onnx"]
    listing.write_text("".join(f"imgs/{i}.png {i}\n" for i in range(4)))  # labels that fit give an accuracy
    code, out, err = run_cli(capsys, "quantize", "--onnx", str(model), "--precision", "fp16",
                             "--val-data", str(listing))
    assert code == 0 and "top-1 accuracy: FP32" in out and "on 4 labeled images" in out, err


def test_quantize_on_a_class_subset_drops_only_the_accuracy(tmp_path, capsys):
    model = tiny_onnx(tmp_path / "tiny.onnx")  # 4 classes, calibrated on 2 class folders
    for name in ("n01", "n02"):
        random_images(tmp_path / "imgs" / name, count=2)
    code, out, err = run_cli(capsys, "quantize", "--onnx", str(model), "--calib-data", str(tmp_path / "imgs"),
                             "--no-calib-cache")
    assert code == 0, err
    assert "top-1 accuracy" not in out
    assert "has 2 classes but the model outputs 4; labels would not match (use one folder per model class); " \
           "no accuracy figure" in err


def test_val_data_with_the_calibration_images_bytes_is_not_held_out(tmp_path, capsys):
    """main compared the arguments: a folder of copies of the calibration images was "held-out" (manifest
    held_out: true)."""
    model = tiny_onnx(tmp_path / "tiny.onnx")
    images = random_images(tmp_path / "imgs")
    copies = tmp_path / "copies"
    copies.mkdir()
    for i, path in enumerate(sorted(images.iterdir())):
        shutil.copy(path, copies / f"copy{i}.png")
    code, out, err = run_cli(capsys, "quantize", "--onnx", str(model), "--calib-data", str(images),
                             "--val-data", str(copies), "--no-calib-cache")
    assert code == 0, err
    evaluation = json.loads((tmp_path / "tiny.int8.onnx.json").read_text())["evaluation"]
    assert evaluation["held_out"] is False
    assert f"NOT held out: 4 of 4 are calibration images of {images}, same bytes" in evaluation["data"]
    assert "4 held-out images" not in out + err


def test_a_budget_on_labels_that_do_not_fit_says_what_differs(tmp_path, capsys):
    """main told a labelled --val-data with more classes than the model that it "needs labeled held-out images"."""
    model = tiny_onnx(tmp_path / "tiny.onnx")  # 4 classes
    for i in range(6):
        random_images(tmp_path / "val" / f"class{i}", count=1)
    code, _, err = run_cli(capsys, "quantize", "--onnx", str(model), "--calib-data", str(random_images(tmp_path / "c")),
                           "--val-data", str(tmp_path / "val"), "--max-top1-drop", "1", "--no-calib-cache")
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"eca-deploy: error: {tmp_path / 'val'} has 6 classes but the model outputs 4; labels would not match (use "
        "one folder per model class)"), err
    assert "needs labeled" not in err


# --- 21. concurrent runs sharing one calibration cache ---------------------------------------------------

STORE_MANY = """
import sys, time
from pathlib import Path
from eca_deploy.calibration.int8.cache import store_ranges
from eca_deploy.calibration.int8.calibrators import TensorRange
cache, worker, start = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
while not start.exists():
    time.sleep(0.001)
for i in range(15):
    store_ranges(cache, {f"model{worker}|data{i}|minmax": {"t": TensorRange(-1.0, 1.0, 1.0)}}, 8)
"""


def test_concurrent_runs_sharing_a_cache_keep_every_entry(tmp_path):
    """Six writers adding 15 entries each, all released at once: read-merge-write without the lock lost
    entries in most runs of this test."""
    cache, start = tmp_path / "shared.calib.json", tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", STORE_MANY, str(cache), str(w), str(start)], cwd=REPO)
               for w in range(6)]
    start.touch()
    assert [w.wait(timeout=300) for w in workers] == [0] * 6
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 6 * 15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "shared.calib.json"]  # no lock or temp file left


# --- 22. temporary files a killed run left behind --------------------------------------------------------

def test_stale_temporary_files_are_swept_but_never_a_live_one(tmp_path):
    import fcntl

    from eca_deploy.artifacts import STALE_TEMP_S, write_json

    old = os.stat(tmp_path).st_mtime - STALE_TEMP_S - 60
    names = {"dead": ".model.onnx.k3x9_a1z.tmp", "fresh": ".model.onnx.abcd1234.tmp",
             "live": ".report.json.q1w2e3r4.tmp", "not ours": ".notes.tmp", "user's": "model.onnx.zzzzzzzz.tmp"}
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"half an artifact")
        if key != "fresh":
            os.utime(tmp_path / name, (old, old))
    with open(tmp_path / names["live"], "rb") as live:  # a writer that is still running holds this lock
        fcntl.flock(live.fileno(), fcntl.LOCK_EX)
        write_json(tmp_path / "result.json", {"ok": True})
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["result.json"] + [n for k, n in names.items() if k != "dead"])


def test_a_killed_write_leaves_a_temp_that_the_next_run_sweeps(tmp_path):
    """A real kill -9 in the middle of atomic_path, then a later write into the same folder."""
    code = ("import sys, os, signal; from eca_deploy.artifacts import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'partial'); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model.onnx")], cwd=REPO)
    assert proc.returncode == -9
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".model.onnx.") and left.name.endswith(".tmp")
    from eca_deploy.artifacts import STALE_TEMP_S, write_json

    write_json(tmp_path / "a.json", {})  # too fresh to be judged dead yet: kept
    assert left.exists()
    old = left.stat().st_mtime - STALE_TEMP_S - 1
    os.utime(left, (old, old))
    write_json(tmp_path / "b.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_comparing_non_finite_outputs_is_silent(recwarn):
    from eca_deploy.graph.compare import check_elements, compare_outputs

    reference = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    candidate = reference.copy()
    candidate[0, 0], candidate[1, 1] = np.nan, np.inf
    assert np.isnan(compare_outputs(reference, candidate).max_abs)
    assert check_elements(reference, candidate, 1e-3, 1e-3).mismatched == 2
    assert not recwarn.list  # the verdict says it; no numpy warnings on the user's screen
