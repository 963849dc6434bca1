"""`eca-deploy triton`: every config.pbtxt is parsed with Triton's own ModelConfig schema (tritonclient's
protobuf) and its fields are checked against the artifact: an ONNX run by onnxruntime, an OpenVINO IR read by
OpenVINO, and an engine built through the fake TensorRT / Polygraphy (tests/runtime/tensorrt) with its manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper

from eca_deploy.artifacts import write_artifact
from eca_deploy.cli.main import main
from eca_deploy.graph.session import run_once
from eca_deploy.packaging.triton import preferred_batches
from eca_deploy.runtime.registry import parse_spec
from eca_deploy.runtime.base import OpenOptions
from eca_deploy.runtime.harness.bench import BenchConfig, Timing, run_bench
from eca_deploy.runtime.harness.doctor import SMOKE_IMGSZ, tiny_eca_onnx
from eca_deploy.runtime.harness.report import new_report
from eca_deploy.runtime.tensorrt import env as tensorrt_env
from eca_deploy.runtime.tensorrt.builder import BuildConfig, build_engine

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime" / "tensorrt"))
from fake_polygraphy import FakePolygraphy, polygraphy_modules  # noqa: E402
from fake_tensorrt import FakeCuda, fake_tensorrt  # noqa: E402

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
CLASSES = 10  # tiny_eca_onnx's


def parse_config(entry: Path):
    """config.pbtxt through Triton's own schema: an unknown field or a wrong type fails here."""
    config = text_format.Parse((entry / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == entry.name  # Triton refuses a config whose name is not its folder's
    return config


def dtype_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def kind_name(value: int) -> str:
    return model_config_pb2.ModelInstanceGroup.Kind.Name(value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny ECA network (dynamic batch, 3 x SMOKE_IMGSZ^2 in, 10 logits out) with an export manifest."""
    folder = tmp_path_factory.mktemp("tiny")
    built = tiny_eca_onnx(folder / "built.onnx")
    write_artifact(folder / "tiny.onnx", built.read_bytes(), "export", precision="fp32")
    return folder / "tiny.onnx"


@pytest.fixture(scope="module")
def tiny_ir(tiny, tmp_path_factory) -> Path:
    """The same network as OpenVINO IR (.xml + .bin), with a manifest."""
    import openvino as ov

    folder = tmp_path_factory.mktemp("ir")
    ov.save_model(ov.convert_model(str(tiny)), str(folder / "built.xml"))
    write_artifact(folder / "tiny.xml", (folder / "built.xml").read_bytes(), "export", precision="fp32")
    (folder / "tiny.bin").write_bytes((folder / "built.bin").read_bytes())
    return folder / "tiny.xml"


@pytest.fixture()
def engine(tiny, tmp_path, monkeypatch) -> Path:
    """An engine of the tiny network built by our builder through the fake TensorRT 10.3 (batch 1:4:8): the
    manifest is the one `eca-deploy build` writes."""
    cuda = FakeCuda()
    modules = {"tensorrt": fake_tensorrt(cuda, "10.3.0.30"), "pycuda.driver": cuda,
               **polygraphy_modules(FakePolygraphy())}
    monkeypatch.setattr(tensorrt_env, "_import_module", modules.__getitem__)
    monkeypatch.setattr(tensorrt_env, "_primary", None)
    monkeypatch.setattr(tensorrt_env, "_at_exit", lambda hook: None)
    source = tmp_path / "tiny.onnx"
    source.write_bytes(tiny.read_bytes())
    return build_engine(BuildConfig(onnx=str(source), profile="1:4:8")).engine_path


def triton(*argv) -> int:
    return main(["triton", *map(str, argv)])


def test_onnx_entry_parses_with_tritons_schema_and_runs_as_declared(tiny, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert triton(tiny, "-o", repo, "--instances", "3") == 0
    assert capsys.readouterr().out.strip() == (f"wrote {repo / 'tiny'}: onnxruntime, max_batch_size 32, "
                                               "3 x KIND_CPU")
    config = parse_config(repo / "tiny")
    assert (config.backend, config.platform, config.max_batch_size) == ("onnxruntime", "", 32)
    [inp], [out] = config.input, config.output
    assert (inp.name, dtype_name(inp.data_type), list(inp.dims)) == ("input", "TYPE_FP32", [3, SMOKE_IMGSZ,
                                                                                            SMOKE_IMGSZ])
    assert (out.name, dtype_name(out.data_type), list(out.dims), out.label_filename) == ("logits", "TYPE_FP32",
                                                                                         [CLASSES], "")
    [group] = config.instance_group
    assert (kind_name(group.kind), group.count) == ("KIND_CPU", 3)
    assert config.HasField("dynamic_batching") and not config.dynamic_batching.preferred_batch_size
    # the copied model takes what the config declares, at a batch up to max_batch_size, and gives its logits
    model = repo / "tiny" / "1" / "model.onnx"
    batch = np.random.default_rng(0).standard_normal((config.max_batch_size, *inp.dims), dtype=np.float32)
    np.testing.assert_array_equal(run_once(model, batch), run_once(tiny, batch))
    assert run_once(model, batch).shape == (config.max_batch_size, *out.dims)
    # the manifest beside it describes the copy: our own tools accept it as the file's
    assert parse_spec(str(model)).manifest["precision"] == "fp32"
    assert sorted(p.name for p in (repo / "tiny").rglob("*")) == ["1", "config.pbtxt", "model.onnx",
                                                                  "model.onnx.json"]


def test_ir_entry_matches_what_openvino_reads(tiny_ir, tmp_path):
    import openvino as ov

    repo = tmp_path / "repo"
    assert triton(tiny_ir, "-o", repo, "--name", "tiny-ir", "--max-batch-size", "4") == 0
    config = parse_config(repo / "tiny-ir")
    assert (config.backend, config.max_batch_size) == ("openvino", 4)
    assert kind_name(config.instance_group[0].kind) == "KIND_CPU"
    version = repo / "tiny-ir" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.bin", "model.xml", "model.xml.json"]
    read = ov.Core().read_model(str(version / "model.xml"))  # Triton's backend loads model.xml + model.bin
    for declared, port in ((config.input[0], read.inputs[0]), (config.output[0], read.outputs[0])):
        assert declared.name == port.get_any_name()
        assert [-1, *declared.dims] == [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
        assert dtype_name(declared.data_type) == "TYPE_FP32" == "TYPE_" + {"f32": "FP32"}[
            port.get_element_type().get_type_name()]


def test_engine_entry_takes_its_profile_and_gpu_instances(engine, tmp_path):
    repo = tmp_path / "repo"
    assert triton(engine, "-o", repo, "--name", "tiny_trt") == 0
    config = parse_config(repo / "tiny_trt")
    manifest = json.loads((engine.parent / (engine.name + ".json")).read_text())
    assert (config.platform, config.backend) == ("tensorrt_plan", "")
    assert config.max_batch_size == manifest["profile"]["max"][0] == 8
    assert (config.input[0].name, list(config.input[0].dims)) == ("input", [3, SMOKE_IMGSZ, SMOKE_IMGSZ])
    assert (config.output[0].name, list(config.output[0].dims)) == ("logits", [CLASSES])
    assert {dtype_name(t.data_type) for t in (*config.input, *config.output)} == {"TYPE_FP32"}
    assert kind_name(config.instance_group[0].kind) == "KIND_GPU"
    plan = repo / "tiny_trt" / "1" / "model.plan"
    assert plan.read_bytes() == engine.read_bytes()
    assert parse_spec(str(plan)).manifest["profile"] == manifest["profile"]  # the copied manifest is the plan's


def test_engine_batch_above_its_profile_is_refused(engine, tmp_path, capsys):
    assert triton(engine, "-o", tmp_path / "repo", "--max-batch-size", "16") == 2
    assert "above" in capsys.readouterr().err and not (tmp_path / "repo").exists()


def test_engine_manifest_without_outputs_is_refused(engine, tmp_path, capsys):
    """An engine built before the manifest recorded its outputs: the config cannot be written from it."""
    manifest = engine.parent / (engine.name + ".json")
    record = json.loads(manifest.read_text())
    del record["outputs"]
    manifest.write_text(json.dumps(record))
    assert triton(engine, "-o", tmp_path / "repo") == 2
    err = capsys.readouterr().err
    assert '"outputs"' in err and "rebuild" in err and len(err.strip().splitlines()) == 1


@pytest.fixture()
def static_onnx(tiny, tmp_path) -> Path:
    model = onnx.load(str(tiny))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 2
    onnx.save(model, str(tmp_path / "static.onnx"))
    return tmp_path / "static.onnx"


def test_static_batch_means_no_batching_and_full_dims(static_onnx, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert triton(static_onnx, "-o", repo, "--max-batch-size", "4") == 2
    assert "static batch axis (2)" in capsys.readouterr().err and not repo.exists()
    assert triton(static_onnx, "-o", repo) == 0
    config = parse_config(repo / "static")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 3, SMOKE_IMGSZ, SMOKE_IMGSZ]
    assert list(config.output[0].dims) == [2, CLASSES]


def test_labels_file_becomes_the_outputs_label_filename(tiny, tmp_path, capsys):
    names = [f"digit {i}" for i in range(CLASSES)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    repo = tmp_path / "repo"
    assert triton(tiny, "-o", repo, "--labels", tmp_path / "names.txt") == 0
    assert parse_config(repo / "tiny").output[0].label_filename == "labels.txt"
    assert (repo / "tiny" / "labels.txt").read_text().splitlines() == names
    (tmp_path / "short.txt").write_text("a\nb\n")
    assert triton(tiny, "-o", tmp_path / "other", "--labels", tmp_path / "short.txt") == 2
    assert "names 2 classes but the model has 10" in capsys.readouterr().err


def test_bench_result_sets_the_preferred_batch(tiny, tmp_path):
    """A real bench report of the artifact (the JSON `eca-deploy bench` writes) is read back."""
    result = run_bench(BenchConfig(model=str(tiny), timing=Timing(batches=(1, 2, 4), warmup=1, iterations=5),
                                   options=OpenOptions(threads=1)))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(new_report("bench", {"label": "cpu"}, [result.row()])))
    repo = tmp_path / "repo"
    assert triton(tiny, "-o", repo, "--bench", bench) == 0
    config = parse_config(repo / "tiny")
    assert list(config.dynamic_batching.preferred_batch_size) == list(preferred_batches(result.entries, 32))


def test_preferred_batch_is_the_smallest_within_a_tenth_of_the_best():
    entries = [{"batch": b, "clock": "host", "fps": fps} for b, fps in ((1, 100.0), (4, 380.0), (8, 400.0),
                                                                          (16, 405.0))]
    assert preferred_batches(entries, 32) == (4,)
    assert preferred_batches(entries + [{"batch": 32, "clock": "host", "fps": 900.0}], 32) == (32,)
    assert preferred_batches(entries, 2) == ()  # only batch 1 fits: nothing is worth waiting for
    assert preferred_batches([{"batch": 8, "clock": "cuda-events", "fps": 1e6}], 32) == ()  # host clock only


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not JSON"),
    (json.dumps({"schema": "eca-deploy/report", "schema_version": 1, "kind": "bench", "created": "x",
                 "devices": [{"label": "cpu"}], "skipped": [],
                 "rows": [{"device": "cpu", "artifact": "tiny.onnx", "format": "ONNX", "precision": "fp32",
                           "backend": "onnxruntime-cpu", "status": "measured",
                           "bench": {"batches": [{"batch": "8", "clock": "host"}]}}]}), "\"batch\" is a JSON string"),
    (json.dumps({"schema": "eca-deploy/report", "schema_version": 1, "kind": "bench", "created": "x",
                 "devices": [{"label": "cpu"}], "skipped": [], "rows": []}), "holds no bench result of tiny.onnx"),
])
def test_hostile_bench_files_are_one_line_errors(tiny, tmp_path, capsys, content, message):
    (tmp_path / "bench.json").write_text(content)
    assert triton(tiny, "-o", tmp_path / "repo", "--bench", tmp_path / "bench.json") == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "repo").exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "..", "x" * 65, "bad\nname", "", "é"])
def test_hostile_names_are_refused_before_anything_is_written(tiny, tmp_path, capsys, name):
    repo = tmp_path / "deep" / "repo"
    assert triton(tiny, "-o", repo, "--name", name) == 2
    assert "cannot be a Triton model name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_entry_is_replaced_only_with_force(tiny, tiny_ir, tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "tiny").mkdir(parents=True)
    (repo / "tiny" / "config.pbtxt").write_text("name: \"tiny\"  # tuned by hand\n")
    assert triton(tiny, "-o", repo) == 2
    assert "--force" in capsys.readouterr().err
    assert "tuned by hand" in (repo / "tiny" / "config.pbtxt").read_text()
    assert triton(tiny_ir, "-o", repo, "--name", "tiny", "--force") == 0
    assert parse_config(repo / "tiny").backend == "openvino"
    assert sorted(p.name for p in repo.iterdir()) == ["tiny"]  # nothing staged is left behind
    (repo / "link").symlink_to(tmp_path)
    assert triton(tiny, "-o", repo, "--name", "link", "--force") == 2
    assert "is not a model folder" in capsys.readouterr().err and (repo / "link").is_symlink()


def test_two_artifacts_of_one_name_are_refused_before_either_is_written(tiny, tiny_ir, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert triton(tiny, tiny_ir, "-o", repo) == 2
    assert "both be the Triton model 'tiny'" in capsys.readouterr().err and not repo.exists()


def test_hostile_tensor_names_round_trip_through_the_config(tmp_path):
    """Names come from the graph: quotes, backslashes and control characters are escaped, never break the file."""
    name = 'in"put\\\n\x1b[31m'
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT16, ["n", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Cast", [name], ["out"], to=TensorProto.FLOAT16)],
                                                "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "odd.onnx"))
    assert triton(tmp_path / "odd.onnx", "-o", tmp_path / "repo") == 0
    config = parse_config(tmp_path / "repo" / "odd")
    assert config.input[0].name == name and dtype_name(config.output[0].data_type) == "TYPE_FP16"
    assert len(config.input) == len(config.output) == 1


def test_onnx_on_openvino_names_its_file_for_openvinos_backend(tiny, tmp_path):
    """openvino:<file.onnx> (what the pipeline's OpenVINO rows run): OpenVINO's backend loads the ONNX itself,
    named by default_model_filename."""
    repo = tmp_path / "repo"
    assert triton(f"openvino:{tiny}", "-o", repo) == 0
    config = parse_config(repo / "tiny")
    assert (config.backend, config.default_model_filename, config.max_batch_size) == ("openvino", "model.onnx", 32)
    assert (repo / "tiny" / "1" / "model.onnx").read_bytes() == tiny.read_bytes()
    assert list(config.input[0].dims) == [3, SMOKE_IMGSZ, SMOKE_IMGSZ]


def test_engine_profile_that_cannot_take_batch_1_is_refused(engine, tmp_path, capsys):
    manifest = engine.parent / (engine.name + ".json")
    record = json.loads(manifest.read_text())
    record["profile"]["min"][0] = 2
    manifest.write_text(json.dumps(record))
    assert triton(engine, "-o", tmp_path / "repo") == 2
    assert "starts at batch 2, but Triton sends batches from 1" in capsys.readouterr().err


def test_external_data_travels_with_the_onnx_and_may_not_point_outside(tiny, tmp_path, capsys):
    model = onnx.load(str(tiny))
    # the conv and classifier weights go to the data file; the small shape constants stay in the graph
    onnx.save(model, str(tmp_path / "big.onnx"), save_as_external_data=True, location="big.onnx.data",
              size_threshold=256)
    repo = tmp_path / "repo"
    assert triton(tmp_path / "big.onnx", "-o", repo) == 0
    version = repo / "big" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["big.onnx.data", "model.onnx"]
    batch = np.random.default_rng(1).standard_normal((2, 3, SMOKE_IMGSZ, SMOKE_IMGSZ), dtype=np.float32)
    np.testing.assert_array_equal(run_once(version / "model.onnx", batch), run_once(tiny, batch))
    (tmp_path / "sub").mkdir()  # a graph whose data file is named as one folder up
    moved = onnx.load(str(tmp_path / "big.onnx"), load_external_data=False)
    for tensor in moved.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../big.onnx.data"
    onnx.save(moved, str(tmp_path / "sub" / "escape.onnx"))
    assert triton(tmp_path / "sub" / "escape.onnx", "-o", tmp_path / "other") == 2
    assert "keeps weights outside its folder (../big.onnx.data)" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_pipeline_refuses_an_existing_entry_before_any_work(tmp_path, capsys):
    (tmp_path / "repo" / "eca_resnet18").mkdir(parents=True)
    out = tmp_path / "out"
    assert main(["pipeline", "--model", "eca_resnet18", "--imgsz", "32", "-o", str(out),
                 "--triton", str(tmp_path / "repo")]) == 2
    assert "repo/eca_resnet18 already exists" in capsys.readouterr().err
    assert not list(out.glob("*.onnx"))  # refused before the export


def test_fp16_glue_int8_onnx_runs_with_onnxruntimes_graph_optimizations_off(tiny, tmp_path):
    """An INT8 model whose Q/DQ glue is FP16 (what TensorRT builds) is miscomputed by onnxruntime's graph
    optimizations: our sessions turn them off, and the config asks Triton's onnxruntime backend for the same."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])
    inits = [helper.make_tensor("scale", TensorProto.FLOAT16, [], [0.05]),
             helper.make_tensor("zero", TensorProto.INT8, [], [0])]
    nodes = [helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16),
             helper.make_node("QuantizeLinear", ["x16", "scale", "zero"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d16"]),
             helper.make_node("Cast", ["d16"], ["logits"], to=TensorProto.FLOAT)]
    model = helper.make_model(helper.make_graph(nodes, "glue", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, str(tmp_path / "glue.onnx"))
    np.testing.assert_allclose(run_once(tmp_path / "glue.onnx", np.full((1, 4), 0.5, np.float32)), 0.5)
    repo = tmp_path / "repo"
    assert triton(tmp_path / "glue.onnx", tiny, "-o", repo) == 0
    assert parse_config(repo / "glue").optimization.graph.level == 2  # the backend's "all optimizations off"
    assert not parse_config(repo / "tiny").HasField("optimization")  # an FP32 model keeps them


def test_a_full_disk_is_a_one_line_error_and_leaves_the_repository_as_it_was(tiny, tmp_path, capsys,
                                                                             monkeypatch):
    import errno

    from eca_deploy.packaging import triton as packaging

    def full(source, destination):
        Path(destination).write_bytes(Path(source).read_bytes()[:100])  # a partial file is on disk...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...when the disk fills

    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)
    monkeypatch.setattr(packaging.shutil, "copyfile", full)
    assert triton(tiny, "-o", repo) == 2
    err = capsys.readouterr().err
    assert f"no space left in {repo} to write tiny" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in repo.iterdir()] == ["other"]  # no half entry, no staging folder left behind


def test_a_pytorch_model_is_not_a_triton_artifact(tmp_path, capsys):
    assert triton("torch:eca_resnet18", "-o", tmp_path / "repo") == 2
    err = capsys.readouterr().err
    assert "expected a TensorRT engine, a .onnx file" in err and not (tmp_path / "repo").exists()
