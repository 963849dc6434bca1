"""The model zoo: official topology, exact parameter counts, the ECA layer against the official forward."""

import math

import pytest
import torch

from eca_deploy.models import EcaLayer, adaptive_kernel_size, create_model, eca_blocks, get_spec, list_models
from eca_deploy.models.complexity import count_gmacs, count_parameters
from eca_deploy.errors import ModelNotFoundError
from eca_deploy.testing.official import OfficialEcaLayer

# Parameter counts of the plain torchvision architectures (published figures); ECA adds k weights per block.
BASE_PARAMS = {
    "eca_resnet18": (11_689_512, [2, 2, 2, 2]),
    "eca_resnet34": (21_797_672, [3, 4, 6, 3]),
    "eca_resnet50": (25_557_032, [3, 4, 6, 3]),
    "eca_resnet101": (44_549_160, [3, 4, 23, 3]),
    "eca_resnet152": (60_192_808, [3, 8, 36, 3]),
}
MOBILENETV2_PARAMS = 3_504_872
# Blocks per MobileNetV2 stage and their output channels (the official inverted-residual table).
MOBILENETV2_BLOCKS = [(16, 1), (24, 2), (32, 3), (64, 4), (96, 3), (160, 3), (320, 1)]


@pytest.mark.parametrize("name", sorted(BASE_PARAMS))
def test_resnet_parameter_counts(name):
    base, layers = BASE_PARAMS[name]
    k = get_spec(name).default_k
    assert count_parameters(create_model(name)) == base + sum(n * ks for n, ks in zip(layers, k))


def test_eca_resnet50_k3557_exact_count():
    assert count_parameters(create_model("eca_resnet50", k_size=(3, 5, 5, 7))) == 25_557_112
    assert count_parameters(create_model("resnet50")) == 25_557_032


def test_mobilenetv2_parameter_count_and_official_k_rule():
    model = create_model("eca_mobilenetv2")
    eca = sum((1 if c < 96 else 3) * n for c, n in MOBILENETV2_BLOCKS)
    assert count_parameters(model) == MOBILENETV2_PARAMS + eca
    for _, channels, k in eca_blocks(model):
        assert k == (1 if channels < 96 else 3)


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward(name):
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))  # the smallest size every model takes (ResNets reduce it 32x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_eca_sits_after_last_bn_before_residual_add():
    block = create_model("eca_resnet50").layer1[0]
    names = [n for n, _ in block.named_children()]
    assert names.index("eca") > names.index("bn3")
    # With the ECA conv zeroed the gate is sigmoid(0) = 0.5 everywhere: ECA must halve the branch, not the sum.
    block.eval()
    x = torch.randn(1, 64, 16, 16)
    block.eca.conv.weight.data.fill_(0.0)
    with torch.no_grad():
        residual = block.downsample(x)
        branch = block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))))
        expected = torch.relu(0.5 * branch + residual)
        assert torch.allclose(block(x), expected, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9])
def test_eca_layer_matches_official_forward(k):
    ours, official = EcaLayer(96, k), OfficialEcaLayer(k)
    official.conv.weight.data.copy_(torch.randn_like(official.conv.weight))
    ours.load_state_dict(official.state_dict())
    x = torch.randn(3, 96, 7, 5)
    assert torch.equal(ours(x), official(x))


def test_adaptive_kernel_size_rule():
    for c in [16, 64, 96, 128, 256, 512, 1000, 1024, 2048, 4096]:
        t = (math.log2(c) + 1) / 2
        # Nearest odd number, ties (t even) going up, found by search ...
        nearest_odd = min(range(1, 20, 2), key=lambda o: (abs(o - t), -o))
        # ... and as the paper's reference code writes it: truncate, then bump an even t to odd.
        paper = int(abs(t)) if int(abs(t)) % 2 else int(abs(t)) + 1
        assert adaptive_kernel_size(c) == nearest_odd == paper, c
    assert [adaptive_kernel_size(c) for c in (64, 128, 256, 512, 2048)] == [3, 5, 5, 5, 7]


def test_gflops_match_the_papers():
    """Counted on the meta device: that count equals one on a real model (the `models` command test below)."""
    from eca_deploy.models.complexity import counted_complexity

    assert counted_complexity("resnet50")[1] == pytest.approx(4.09, abs=0.01)
    assert counted_complexity("eca_mobilenetv2")[1] == pytest.approx(0.30, abs=0.01)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelNotFoundError, match="did you mean eca_resnet50"):
        create_model("eca_resnet5O")


def test_wrong_number_of_stage_kernels_is_refused():
    with pytest.raises(ModelNotFoundError, match="4 kernel sizes"):
        create_model("eca_resnet50", k_size=(3, 5))


def test_models_command_runs_no_real_tensor_and_its_figures_match_a_real_count(capsys):
    """`eca-deploy models` prints stored figures at 224 (no forward at all) and counts other sizes on the meta
    device (shapes only): not one module sees a real tensor; the figures equal a count on a real model."""
    import json

    from eca_deploy.cli.main import main

    devices = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, inputs: devices.extend(t.device.type for t in inputs if isinstance(t, torch.Tensor)))
    try:
        assert main(["models", "--json"]) == 0
        at_224 = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
        assert devices == []
        assert main(["models", "--json", "--imgsz", "64"]) == 0
        at_64 = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    finally:
        hook.remove()
    assert set(at_224) == set(at_64) == set(list_models()) and devices and set(devices) == {"meta"}
    real = create_model("eca_resnet18")
    assert at_64["eca_resnet18"]["params"] == at_224["eca_resnet18"]["params"] == count_parameters(real)
    assert at_64["eca_resnet18"]["gflops"] == round(count_gmacs(real, 64), 3)
    assert at_224["eca_resnet50"]["gflops"] == round(count_gmacs(create_model("eca_resnet50"), 224), 3)


@pytest.mark.parametrize("name", list_models())
def test_stored_figures_equal_a_count(name):
    from eca_deploy.models.complexity import STORED_224, counted_complexity

    params, gmacs = counted_complexity(name, 224)
    assert STORED_224[name] == (params, round(gmacs * 1e9))


def test_unknown_name_suggests_the_case_blind_match_first():
    with pytest.raises(ModelNotFoundError, match="did you mean eca_resnet50,"):
        get_spec("ECA_ResNet50")
