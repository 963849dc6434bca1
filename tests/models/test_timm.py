"""timm's ECA models through the same export path (needs the `timm` extra; skipped without it)."""

import pytest
import torch

from eca_deploy.graph.graph import load_onnx, summarize
from eca_deploy.export.onnx_export import ExportConfig, export_model
from eca_deploy.models import EcaLayer, load_model


def _timm():
    try:
        import timm
    except Exception as exc:  # absent, or its torchvision import fails beside this torch
        pytest.skip(f"timm not usable here: {type(exc).__name__}")
    return timm


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    timm = _timm()
    model = timm.create_model("ecaresnetlight", pretrained=False, num_classes=12).eval()
    path = tmp_path_factory.mktemp("timm") / "ecaresnetlight.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_timm_weights_load_and_eca_modules_are_swapped(timm_checkpoint):
    reference, path = timm_checkpoint
    loaded = load_model("timm:ecaresnetlight", path)
    assert loaded.num_classes == 12
    assert len(loaded.eca_blocks) == sum(isinstance(m, EcaLayer) for m in loaded.model.modules()) > 0
    assert not any(type(m).__name__ == "EcaModule" for m in loaded.model.modules())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), reference(x), atol=1e-5, rtol=1e-5)


def test_timm_model_exports_with_plain_eca(timm_checkpoint, tmp_path):
    _, path = timm_checkpoint
    result = export_model(ExportConfig(model="timm:ecaresnetlight", weights=str(path), out_dir=str(tmp_path),
                                       imgsz=96))
    summary = summarize(load_onnx(result.onnx_path))
    assert result.onnx_path.name == "timm_ecaresnetlight.onnx"
    assert summary.eca_blocks and summary.all_plain
    assert not {"Shape", "Expand", "Gather"} & set(summary.ops)
    assert result.parity["simplify"]["max_abs"] <= 1e-4


def test_unknown_timm_model():
    _timm()
    from eca_deploy.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="unknown timm model"):
        load_model("timm:ecaresnet_does_not_exist")


def test_missing_timm_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm" or name.startswith("timm."):
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    from eca_deploy.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r"timm is not installed: pip install 'eca-deploy\[timm\]'"):
        load_model("timm:ecaresnet50d")
