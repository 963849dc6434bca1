"""FP32 judged at FP32's own error: a faithful export passes on real photos, and a checkpoint corrupted before
export (by less than any graph bug) fails, for the trained digits model and, in the slow tier, every model."""

import pytest
import torch

from eca_deploy.export.onnx_export import ExportConfig, export_model
from eca_deploy.models import get_spec, list_models, load_model
from eca_deploy.runtime.base import OpenOptions
from eca_deploy.runtime.harness.parity import ParityConfig, run_parity
from eca_deploy.testing.corrupt import CORRUPTIONS, write_checkpoint

IMGSZ = 32


def _judge(model: str, state: dict, classifier: str, photos, root, corruptions) -> dict:
    """Export ``state`` faithfully and with each corruption, then judge all against the faithful checkpoint."""
    faithful = write_checkpoint(state, root / "faithful.pth")
    exports = {}
    for name in (None, *corruptions):
        weights = faithful if name is None else write_checkpoint(state, root / f"{len(exports)}.pth", name, classifier)
        exports[name] = export_model(ExportConfig(model=model, weights=str(weights), imgsz=IMGSZ, simplify=False,
                                                  out_dir=str(root / str(len(exports))))).onnx_path
    comparison = run_parity(ParityConfig(reference=f"torch:{model}:{faithful}", data=str(photos),
                                         options=OpenOptions(threads=1), use_labels=False,
                                         candidates=[str(p) for p in exports.values()]))
    return {name: c for name, c in zip(exports, comparison.candidates)}


def _assert_verdicts(results: dict) -> None:
    faithful = results.pop(None)
    rounding = next(c for c in faithful.verdict.checks if c["check"] == "max error / logit scale")
    assert faithful.verdict.passed, faithful.verdict.failures
    assert rounding["limit"] < 5e-4 and "float32-vs-float64 gap" in rounding["limit_from"]
    for name, result in results.items():
        assert not result.verdict.passed, name
        assert [c["check"] for c in result.verdict.checks if not c["passed"]] == ["max error / logit scale"], name
        # failed by far: not a coin toss at the edge of the limit
        failed = next(c for c in result.verdict.checks if not c["passed"])
        assert failed["value"] > 10 * failed["limit"], name


@pytest.mark.slow
def test_digits_model_corrupted_before_export_fails_fp32_parity(digits, photos, tmp_path):
    state = torch.load(digits.checkpoint, weights_only=True)["state_dict"]
    _assert_verdicts(_judge(digits.model, state, "fc", photos, tmp_path, list(CORRUPTIONS)))


@pytest.mark.slow
@pytest.mark.parametrize("model", list_models())
def test_every_registered_model_faithful_passes_and_corrupted_fails(model, photos, tmp_path):
    loaded = load_model(model)  # seeded random init with settled BatchNorm statistics
    corruptions = [c for c in CORRUPTIONS if "ECA" not in c or loaded.eca_blocks]
    _assert_verdicts(_judge(model, loaded.model.state_dict(), get_spec(model).classifier, photos, tmp_path,
                            corruptions))
