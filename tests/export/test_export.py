"""ONNX export: the ECA graph shape for every model, parity after export and onnxsim, dynamic batch."""

import json

import numpy as np
import onnx
import pytest
import torch

from eca_deploy.artifacts import manifest_path
from eca_deploy.graph.graph import load_onnx, summarize
from eca_deploy.export.onnx_export import ExportConfig, export_model, to_onnx
from eca_deploy.models import list_models, load_model
from eca_deploy.graph.session import make_session
from eca_deploy.testing.exports import IMGSZ  # the size of the run's shared exports (random_exports)
from eca_deploy.testing.official import use_official_eca

FORBIDDEN_AROUND_ECA = {"Shape", "Expand", "Gather", "Transpose"}


# The deepest models take most of the export time; the default tier covers their families through the others
# (eca_resnet34: the BasicBlock family of eca_resnet18, deeper; eca_resnet101/152: the Bottleneck of eca_resnet50;
# resnet50: eca_resnet50 without its ECA blocks).
DEEP = {"eca_resnet34", "eca_resnet101", "eca_resnet152", "resnet50"}
ALL_MODELS = [pytest.param(name, marks=pytest.mark.slow) if name in DEEP else name for name in list_models()]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eca_blocks_are_plain_conv1d_after_simplification(random_exports, name):
    shared = random_exports[name]
    loaded, result = shared.loaded, shared.result
    model = onnx.load(str(result.onnx_path))
    summary = summarize(model)
    assert [b.k for b in summary.eca_blocks] == [k for _, _, k in loaded.eca_blocks]
    assert [b.channels for b in summary.eca_blocks] == [c for _, c, _ in loaded.eca_blocks]
    assert all(b.path == ["GlobalAveragePool", "Reshape", "Conv", "Reshape", "Sigmoid", "Mul"]
               for b in summary.eca_blocks)
    assert not FORBIDDEN_AROUND_ECA & set(summary.ops)
    for node in model.graph.node:
        if node.op_type == "Conv" and any(a.name == "kernel_shape" and len(a.ints) == 1 for a in node.attribute):
            assert [a.ints for a in node.attribute if a.name == "kernel_shape"][0][0] in (1, 3, 5, 7, 9)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parity_after_export_and_simplification(random_exports, name):
    result = random_exports[name].result
    manifest = json.loads(manifest_path(result.onnx_path).read_text())
    for step in ("export", "simplify"):
        assert manifest["parity"][step]["error"] <= manifest["parity"][step]["limit"] <= 5e-4
        assert "float32-vs-float64 gap" in manifest["parity"][step]["limit_from"]
        assert manifest["parity"][step]["top1_agreement"] == 1.0


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_mobilenetv2", "eca_resnet50"])
@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch_matches_torch(random_exports, name, batch):
    shared = random_exports[name]
    loaded, result = shared.loaded, shared.result
    x = np.random.default_rng(batch).standard_normal((batch, 3, IMGSZ, IMGSZ), dtype=np.float32)
    out = make_session(result.onnx_path).run(["logits"], {"input": x})[0]
    with torch.no_grad():
        ref = loaded.model(torch.from_numpy(x)).numpy()
    assert out.shape == (batch, loaded.num_classes)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_manifest_records_provenance(random_exports):
    result = random_exports["eca_resnet50"].result
    manifest = json.loads(manifest_path(result.onnx_path).read_text())
    assert manifest["model"] == "eca_resnet50"
    assert manifest["eca_k_per_stage"] == [3, 5, 5, 7]  # k3557: every stage, repeats kept
    assert len(manifest["eca_blocks"]) == 16
    assert [b["k"] for b in manifest["eca_blocks"]] == [3] * 3 + [5] * 4 + [5] * 6 + [7] * 3
    assert manifest["opset"] == 17 and manifest["input"]["shape"] == ["batch", 3, IMGSZ, IMGSZ]
    assert manifest["dynamic_axes"]["input"] == {"0": "batch"}
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxsim", "onnxruntime"}
    from eca_deploy.artifacts import sha256_file
    assert manifest["sha256"] == sha256_file(result.onnx_path)


def test_naive_official_forward_is_flagged_not_plain():
    """The control: exporting the official forward leaves Shape/Expand/Transpose around every block."""
    loaded = load_model("eca_resnet18")
    use_official_eca(loaded.model)
    summary = summarize(to_onnx(loaded, 17, None, IMGSZ))
    assert len(summary.eca_blocks) == 8
    assert not any(b.plain for b in summary.eca_blocks)
    assert summary.ops["Transpose"] >= 16 and summary.ops["Expand"] >= 8


def test_static_batch_and_other_sizes(tmp_path):
    result = export_model(ExportConfig(model="eca_resnet18", out_dir=str(tmp_path), static_batch=3, imgsz=96,
                                       opset=13, simplify=False))
    summary = summarize(load_onnx(result.onnx_path))
    assert summary.inputs == [("input", [3, 3, 96, 96])]
    assert summary.opset == 13
    assert summary.all_plain
    assert "simplify" not in result.parity


@pytest.mark.slow
def test_random_init_export_is_byte_identical(random_exports, tmp_path):
    """Same command, same bytes: random init is seeded, so a calibration cache keyed by model hash hits."""
    first = random_exports["eca_resnet18"].result  # the run's shared export, made earlier in another folder
    second = export_model(ExportConfig(model="eca_resnet18", out_dir=str(tmp_path / "b"), imgsz=IMGSZ))
    assert first.onnx_path.read_bytes() == second.onnx_path.read_bytes()
    other = export_model(ExportConfig(model="eca_resnet18", out_dir=str(tmp_path / "c"), imgsz=IMGSZ, seed=1))
    assert other.onnx_path.read_bytes() != first.onnx_path.read_bytes()  # --seed picks the init


def test_mobilenetv2_records_k_of_every_stage(random_exports):
    result = random_exports["eca_mobilenetv2"].result
    manifest = json.loads(manifest_path(result.onnx_path).read_text())
    # k13: k=1 for the four inverted-residual groups below 96 channels, k=3 for the three above
    assert manifest["eca_k_per_stage"] == [1, 1, 1, 1, 3, 3, 3]
    assert len(manifest["eca_blocks"]) == 17


def test_random_init_has_a_trained_models_logit_scale_on_real_photos(random_exports, photos):
    """BN settled on photo-like inputs: on real ImageNet-normalised photos the random-init logits stay at
    the unit scale of a trained model (settled on N(0,1) noise, ECA-ResNet-101 reached a std of 1000)."""
    from eca_deploy.data.sources import load_dataset

    images = np.concatenate([b for b, _ in load_dataset(str(photos), imgsz=IMGSZ, count=None, seed=0).batches(8)])
    # eca_resnet50 and eca_mobilenetv2: the run's shared loads, which are load_model's seeded init too
    models = {"eca_resnet101": load_model("eca_resnet101").model,
              **{name: random_exports[name].loaded.model for name in ("eca_resnet50", "eca_mobilenetv2")}}
    for name, model in models.items():
        with torch.no_grad():
            logits = model(torch.from_numpy(images)).numpy()
        assert 0.05 < logits.std() < 10.0, (name, logits.std())  # a trained ImageNet model: ~2-4


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fp32_export_passes_parity_on_real_photos(random_exports, photos, name):
    """A faithful FP32 export passes parity against its own random-weight PyTorch model on real photos."""
    from eca_deploy.runtime.base import OpenOptions
    from eca_deploy.runtime.harness.parity import ParityConfig, run_parity

    shared = random_exports[name]
    comparison = run_parity(ParityConfig(reference=f"torch:{name}:{shared.weights}", candidates=[str(shared.onnx)],
                                         data=str(photos), options=OpenOptions(device="cpu", threads=1)))
    [candidate] = comparison.candidates
    assert candidate.verdict.passed, candidate.verdict.failures


def test_corrupted_fp32_export_fails_parity_on_real_photos(random_exports, photos, tmp_path):
    """The control: the same export with its first ECA Conv1d weight scaled by 1.2 fails."""
    from onnx import numpy_helper

    from eca_deploy.runtime.base import OpenOptions
    from eca_deploy.runtime.harness.parity import ParityConfig, run_parity

    shared = random_exports["eca_resnet18"]
    model = onnx.load(str(shared.onnx))
    conv1d = next(n for n in model.graph.node if n.op_type == "Conv"
                  and any(a.name == "kernel_shape" and len(a.ints) == 1 for a in n.attribute))
    weight = next(i for i in model.graph.initializer if i.name == conv1d.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.2, weight.name))
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(model, str(corrupted))
    comparison = run_parity(ParityConfig(reference=f"torch:eca_resnet18:{shared.weights}", candidates=[str(corrupted)],
                                         data=str(photos), options=OpenOptions(device="cpu", threads=1)))
    assert not comparison.candidates[0].verdict.passed
