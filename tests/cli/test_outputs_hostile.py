"""Issue 11, item 3: no output may overwrite any file the run reads, nor another output of the same run.

main overwrote, exit 0: an image of --calib-data (it became an ONNX file), the input's external data file
(the input no longer loaded), the input's manifest, and the calibration cache (the next run failed).
"""

import hashlib
import json
import shutil

import onnx
import pytest

from eca_deploy.cli.main import main
from eca_deploy.errors import OutputError
from eca_deploy.runtime.harness.report import new_report
from eca_deploy.runtime.tensorrt.plan import BuildConfig, prepare_build
from hostile import list_file


def _digest(folder):
    """Every file under ``folder`` with its bytes' hash: what the refused run must leave untouched."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def work(digits, tmp_path):
    """A copy of the model with its weights in an external data file, its manifest, a small calibration folder
    and a list of the same images."""
    model = onnx.load(str(digits.onnx))
    onnx.save_model(model, str(tmp_path / "model.onnx"), save_as_external_data=True, location="model.onnx.data",
                    size_threshold=0)
    shutil.copy(digits.onnx.with_name(digits.onnx.name + ".json"), tmp_path / "model.onnx.json")
    calib = tmp_path / "calib"
    for digit in ("0", "1"):
        shutil.copytree(digits.calib_dir / digit, calib / digit, ignore=lambda d, names: sorted(names)[3:])
    list_file(tmp_path / "list.txt", sorted(calib.rglob("*.png")))
    return tmp_path


def _refused(capsys, args, message, folder):
    before = _digest(folder)
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("eca-deploy: error: ")]
    assert code == 2 and errors == err[-1:] and message in err[-1], err
    assert _digest(folder) == before  # nothing written, nothing overwritten


def _quantize(work, *extra):
    return ["quantize", "--onnx", str(work / "model.onnx"), "--calib-data", str(work / "calib"), *extra]


@pytest.mark.parametrize("target", ["calib/0/{first}", "model.onnx.data", "model.onnx.json", "list.txt"])
def test_quantize_refuses_an_output_that_is_an_input(work, capsys, target):
    first = sorted((work / "calib" / "0").iterdir())[0].name
    output = work / target.format(first=first)
    extra = ["--val-data", str(work / "list.txt")]
    _refused(capsys, _quantize(work, "--output", str(output), *extra), "refusing to overwrite the input file", work)


def test_quantize_refuses_an_output_reached_through_a_link(work, capsys):
    (work / "link.onnx").symlink_to(work / "model.onnx.data")
    _refused(capsys, _quantize(work, "--output", str(work / "link.onnx")), "refusing to overwrite the input", work)


def test_quantize_refuses_a_cache_that_is_an_input(work, capsys):
    image = sorted((work / "calib" / "1").iterdir())[0]
    _refused(capsys, _quantize(work, "--calib-cache", str(image), "--output", str(work / "out.onnx")),
             "refusing to overwrite the input file", work)


@pytest.mark.parametrize("cache", ["out.onnx", "out.onnx.json"])
def test_quantize_refuses_outputs_that_collide(work, capsys, cache):
    _refused(capsys, _quantize(work, "--output", str(work / "out.onnx"), "--calib-cache", str(work / cache)),
             "are the same file, and this run writes both", work)


def test_parity_and_bench_refuse_to_write_over_what_they_read(work, capsys):
    for args in (["parity", "--reference", str(work / "model.onnx"), "--candidate", str(work / "model.onnx"),
                  "--data", str(work / "list.txt"), "--out", str(work / "list.txt")],
                 ["parity", "--reference", str(work / "model.onnx"), "--candidate", str(work / "model.onnx"),
                  "--data", str(work / "calib"), "--out", str(sorted((work / "calib" / "0").iterdir())[1])],
                 ["bench", str(work / "model.onnx"), "--out", str(work / "model.onnx.data")],
                 ["bench", str(work / "model.onnx"), "--out", str(work / "model.onnx.json")]):
        _refused(capsys, args, "refusing to overwrite the input file", work)


def test_report_refuses_to_write_over_a_result_it_merges(work, capsys):
    (work / "out").mkdir()
    result = work / "out" / "report_latency.png"  # a result file that happens to carry a plot's name
    result.write_text(json.dumps(new_report("bench", {"label": "cpu"}, [])))
    _refused(capsys, ["report", str(result), "--out", str(work / "out")], "refusing to overwrite the input", work)


def test_build_refuses_colliding_outputs_and_the_input_manifest(work):
    engine = work / "model.engine"
    with pytest.raises(OutputError, match="are the same file"):
        prepare_build(BuildConfig(onnx=str(work / "model.onnx"), output=str(engine), timing_cache=str(engine)))
    with pytest.raises(OutputError, match="are the same file"):
        prepare_build(BuildConfig(onnx=str(work / "model.onnx"), output=str(engine),
                                  timing_cache=str(work / "model.engine.json")))
    with pytest.raises(OutputError, match="refusing to overwrite the input file .*model.onnx.data"):
        prepare_build(BuildConfig(onnx=str(work / "model.onnx"), timing_cache=str(work / "model.onnx.data")))
