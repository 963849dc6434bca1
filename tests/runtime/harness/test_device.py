"""Device description from fixture files and recorded tool outputs (a Jetson, a desktop GPU, a plain CPU)."""

from pathlib import Path

import pytest

from eca_deploy.runtime.harness.device import (UNPINNED_WARNING, Probe, describe_device, parse_jetson_clocks, parse_l4t,
                                       parse_nvpmodel)

ORIN_RELEASE = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6\n"
NVPMODEL = "NVPM WARN: fan mode is not set!\nNV Power Mode: 15W\n0\n"
CLOCKS_UNPINNED = """SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit
Online CPUs: 0-5
cpu0: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=1510400 CurrentFreq=729600 IdleStates: WFI=1 c7=1
cpu1: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=1510400 CurrentFreq=1510400 IdleStates: WFI=1 c7=1
GPU MinFreq=306000000 MaxFreq=624750000 CurrentFreq=306000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0
NV Power Mode: 15W
"""
CLOCKS_PINNED = """cpu0: Online=1 Governor=schedutil MinFreq=1510400 MaxFreq=1510400 CurrentFreq=1510400 IdleStates: WFI=0 c7=0
cpu1: Online=1 Governor=schedutil MinFreq=1510400 MaxFreq=1510400 CurrentFreq=1510400 IdleStates: WFI=0 c7=0
cpu2: Online=0 Governor=schedutil MinFreq=115200 MaxFreq=1510400 CurrentFreq=115200 IdleStates: WFI=0 c7=0
GPU MinFreq=624750000 MaxFreq=624750000 CurrentFreq=624750000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
"""
SMI_QUERY = "NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB\n"
SMI = "| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4     |\n"


def make_root(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def runner(outputs: dict[tuple[str, ...], str]):
    calls = []

    def run(argv):
        calls.append(tuple(argv))
        return outputs.get(tuple(argv))

    run.calls = calls
    return run


def jetson_probe(tmp_path, clocks):
    root = make_root(tmp_path, {"/proc/device-tree/model": "NVIDIA Jetson Orin Nano Developer Kit\x00",
                                "/etc/nv_tegra_release": ORIN_RELEASE,
                                "/usr/local/cuda/version.json": '{"cuda" : {"name" : "CUDA SDK", "version" : "12.2.140"}}'})
    outputs = {("nvpmodel", "-q"): NVPMODEL}
    if clocks is not None:
        outputs[("jetson_clocks", "--show")] = clocks
    return Probe(root, runner(outputs))


def test_jetson_unpinned_clocks_warn(tmp_path):
    info = describe_device(probe=jetson_probe(tmp_path, CLOCKS_UNPINNED))
    jetson = info["jetson"]
    assert jetson["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert jetson["l4t"] == "36.3.0"
    assert jetson["jetpack"] == "6.0"  # from the L4T table: no dpkg answer in this fixture
    assert jetson["power_mode"] == {"name": "15W", "id": 0}
    assert jetson["clocks_pinned"] is False
    assert jetson["clocks_unpinned_domains"] == ["GPU", "cpu0", "cpu1"]
    assert UNPINNED_WARNING in info["warnings"]
    assert info["cuda"]["toolkit"] == "12.2.140"
    assert info["label"] == "NVIDIA Jetson Orin Nano Developer Kit (15W)"


def test_jetson_pinned_clocks_do_not_warn(tmp_path):
    info = describe_device(probe=jetson_probe(tmp_path, CLOCKS_PINNED))
    assert info["jetson"]["clocks_pinned"] is True  # offline cpu2 and EMC's range do not count
    assert info["warnings"] == []


def test_jetson_clocks_unreadable_says_so(tmp_path):
    info = describe_device(probe=jetson_probe(tmp_path, None))
    assert info["jetson"]["clocks_pinned"] is None
    assert any("jetson_clocks --show" in w for w in info["warnings"])


def test_jetpack_from_dpkg_wins_over_the_table(tmp_path):
    probe = jetson_probe(tmp_path, CLOCKS_PINNED)
    probe.run = runner({("dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"): "6.0+b106\n"})
    assert describe_device(probe=probe)["jetson"]["jetpack"] == "6.0"


def test_desktop_gpu(tmp_path):
    probe = Probe(make_root(tmp_path, {"/proc/cpuinfo": "processor\t: 0\nmodel name\t: AMD EPYC 9654\n"
                                                        "physical id\t: 0\ncore id\t: 0\n"}),
                  runner({("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"):
                          SMI_QUERY, ("nvidia-smi",): SMI}))
    info = describe_device(threads=4, probe=probe)
    assert info["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory": "81559 MiB"}]
    assert info["cuda"]["driver_supports"] == "12.4"
    assert info["cpu"]["model"] == "AMD EPYC 9654"
    assert info["threads"]["onnxruntime_intra_op"] == 4
    assert info["jetson"] is None and info["warnings"] == []
    assert info["label"] == "NVIDIA H100 80GB HBM3"
    assert info["versions"]["onnxruntime"]


def test_plain_cpu_machine_has_no_gpu_and_says_the_cpu(tmp_path):
    probe = Probe(make_root(tmp_path, {"/proc/cpuinfo": "model name\t: Test CPU\n"}), runner({}))
    info = describe_device(probe=probe)
    assert info["gpus"] == [] and info["jetson"] is None
    assert info["label"].startswith("Test CPU (")
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]


@pytest.mark.parametrize("text, expected", [
    (ORIN_RELEASE, "36.3.0"),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref", "35.4.1"),
    ("garbage", None), (None, None)])
def test_parse_l4t(text, expected):
    assert parse_l4t(text) == expected


def test_parsers_tolerate_missing_output():
    assert parse_nvpmodel(None) is None
    assert parse_nvpmodel("NV Power Mode: MAXN") == {"name": "MAXN", "id": None}
    assert parse_jetson_clocks("") is None
    assert parse_jetson_clocks("nothing useful") is None
