"""Checkpoint loading: official release format with k inferred, bare state_dict, safetensors, bad files."""

import os

import pytest
import torch
from safetensors.torch import save_file

from eca_deploy.errors import CheckpointError
from eca_deploy.models import k_per_stage, load_model
from eca_deploy.models.resnet import ECABasicBlock, ResNet
from eca_deploy.models.registry import create_model


def save_official(model, path, arch="eca_resnet50"):
    """The layout of the released eca_resnet50_k3557.pth.tar: DataParallel keys plus training metadata."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}
    torch.save({"epoch": 100, "arch": arch, "state_dict": state, "best_prec1": torch.tensor(77.48),
                "optimizer": optimizer}, path)


def outputs(model, seed=0):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def test_official_checkpoint_round_trip_infers_k_and_classes(tmp_path):
    # Neither the kernel sizes nor the class count are the registry's defaults: both come from the file.
    source = create_model("eca_resnet50", num_classes=37, k_size=(5, 7, 3, 9))
    for p in source.parameters():
        p.data.normal_(0, 0.05)
    path = tmp_path / "eca_resnet50_k5739.pth.tar"
    save_official(source, path, arch="resnet50")  # `arch` in released files is not to be trusted
    loaded = load_model("eca_resnet50", path)
    assert loaded.num_classes == 37
    assert k_per_stage(loaded.eca_blocks) == [5, 7, 3, 9]
    assert torch.equal(outputs(loaded.model), outputs(source))
    assert loaded.checkpoint_meta["epoch"] == 100
    assert len(loaded.weights_sha256) == 64


def test_bare_state_dict_and_safetensors_load_the_same(tmp_path):
    source = create_model("eca_resnet18", num_classes=10, k_size=(3, 5, 7, 7))
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    reference = outputs(source)
    for name in ("bare.pth", "w.safetensors"):
        loaded = load_model("eca_resnet18", tmp_path / name)
        assert loaded.num_classes == 10
        assert torch.equal(outputs(loaded.model), reference)


def test_missing_num_batches_tracked_is_accepted(tmp_path):
    source = create_model("eca_resnet18")
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state}, tmp_path / "old.pth.tar")
    assert torch.equal(outputs(load_model("eca_resnet18", tmp_path / "old.pth.tar").model), outputs(source))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model("eca_resnet50", tmp_path / "nope.pth.tar")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth.tar"
    path.write_text("these are not weights\n" * 20)
    with pytest.raises(CheckpointError, match="not a"):
        load_model("eca_resnet18", path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "cut.pth.tar"
    save_official(create_model("eca_resnet18"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model("eca_resnet18", path)


def test_weights_of_another_architecture(tmp_path):
    plain_resnet18 = ResNet(ECABasicBlock, [2, 2, 2, 2], 1000, ())  # torchvision's resnet18 key layout
    path = tmp_path / "resnet18.pth"
    torch.save(plain_resnet18.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"do not fit eca_resnet50: \d+ missing .*mis-shaped") as info:
        load_model("eca_resnet50", path)
    assert "\n" not in str(info.value)


def test_pickle_with_an_arbitrary_object_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)  # as a malicious .pth would be made
    with pytest.raises(CheckpointError, match=r"refused to load .*GLOBAL posix.system.*weights_only=True"):
        load_model("eca_resnet18", path)
    assert not (tmp_path / "pwned").exists()


def test_a_dict_without_tensors_is_refused(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "arch": "eca_resnet50"}, path)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        load_model("eca_resnet50", path)
