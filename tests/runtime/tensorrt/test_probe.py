"""`eca-deploy doctor` on machines with TensorRT, played by fakes (fake_tensorrt.py: documented behaviour only):
a working Jetson, and a TensorRT whose builder cannot start (a problem: exit 1)."""

from __future__ import annotations

import pytest
from fake_polygraphy import polygraphy_modules
from fake_tensorrt import FakeCuda, fake_tensorrt

from eca_deploy.runtime.harness import doctor
from eca_deploy.runtime.harness.device import Probe
from eca_deploy.runtime.tensorrt import env as tensorrt_env


@pytest.fixture()
def jetson(monkeypatch, tmp_path):
    """A Jetson AGX Orin on JetPack 6.1 with TensorRT 10.3, played by files and fakes."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic\n")
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\x00")
    outputs = {"nvpmodel": "NV Power Mode: MAXN\n0\n"}
    probe = Probe(root=tmp_path, run=lambda argv: outputs.get(argv[0]))
    monkeypatch.setattr(tensorrt_env, "_primary", None)
    monkeypatch.setattr(tensorrt_env, "_logger", None)
    monkeypatch.setattr(tensorrt_env, "_at_exit", lambda hook: None)

    def install(**trt_settings):
        cuda = FakeCuda()
        modules = {"tensorrt": fake_tensorrt(cuda, **trt_settings), "pycuda.driver": cuda, **polygraphy_modules()}
        monkeypatch.setattr(tensorrt_env, "_import_module", lambda name: modules[name])
    return probe, install


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_working_jetson_reports_dla_jetpack_and_power_mode(jetson):
    probe, install = jetson
    install(dla_cores=2)
    checks = _by_name(doctor.run_doctor(probe, smoke=False))
    assert checks["TensorRT"].status == "OK" and "10.3.0.30, builder starts" in checks["TensorRT"].detail
    assert checks["pycuda"].status == "OK" and "driver API 12.6" in checks["pycuda"].detail
    assert checks["DLA"].detail == "2 DLA core(s)"
    assert checks["JetPack/L4T"].detail == "JetPack 6.1 (L4T 36.4.0)"
    assert "power mode MAXN" in checks["power/clocks"].detail
    assert doctor.exit_code(list(checks.values())) == 0


def test_a_tensorrt_whose_builder_cannot_start_is_a_problem_exit_1(jetson):
    probe, install = jetson
    install(builder_error=TypeError("pybind11::init(): factory function returned nullptr"))
    checks = doctor.run_doctor(probe, smoke=False)
    trt = _by_name(checks)["TensorRT"]
    assert trt.status == "problem" and "the builder cannot start" in trt.detail
    assert "sudo apt install python3-libnvinfer" in trt.line()  # the Jetson's fix, not pip's
    assert doctor.exit_code(checks) == 1


def test_doctor_on_jetpack_5_1_runs_the_smoke_test_and_passes(jetson, monkeypatch):
    """JetPack 5.1 (TensorRT 8.5): the smoke test builds through Polygraphy (which takes 8.5), without the
    optimization level 8.5 lacks; the fake engines run the built ONNX in onnxruntime. Before: the Python
    builder refused 8.5 and doctor said PROBLEM, exit 1, on every such board."""
    from fake_polygraphy import FakePolygraphy

    probe, _ = jetson
    cuda = FakeCuda()
    poly = FakePolygraphy()
    modules = {"tensorrt": fake_tensorrt(cuda, version="8.5.2.2"), "pycuda.driver": cuda,
               **polygraphy_modules(poly)}
    monkeypatch.setattr(tensorrt_env, "_import_module", lambda name: modules[name])
    checks = _by_name(doctor.run_doctor(probe, smoke=True))
    assert checks["smoke test"].status == "OK", checks["smoke test"].detail
    assert "FP32 + FP16 engines match onnxruntime" in checks["smoke test"].detail
    assert poly.calls["CreateConfig"]["builder_optimization_level"] is None
    assert doctor.exit_code(list(checks.values())) == 0


def test_doctor_and_the_device_description_read_the_jetson_gpus_load_and_clock(jetson):
    """sysfs as JetPack 6 lays it out on an AGX Orin (paths as jetson-stats reads them, jtop/core/gpu.py)."""
    from eca_deploy.runtime.harness.device import describe_device

    probe, install = jetson
    install()
    root = probe.root
    (root / "sys/devices/gpu.0").mkdir(parents=True)
    (root / "sys/devices/gpu.0/load").write_text("347\n")  # per mille
    node = root / "sys/class/devfreq/17000000.ga10b"
    (node / "device/of_node").mkdir(parents=True)
    (node / "device/of_node/name").write_text("ga10b\x00")
    for key, hz in (("cur", 612000000), ("min", 306000000), ("max", 1300500000)):
        (node / f"{key}_freq").write_text(f"{hz}\n")
    (root / "sys/class/devfreq/15340000.vic/device/of_node").mkdir(parents=True)  # another devfreq node
    (root / "sys/class/devfreq/15340000.vic/device/of_node/name").write_text("vic\x00")
    checks = _by_name(doctor.run_doctor(probe, smoke=False))
    assert checks["power/clocks"].detail.endswith(", GPU 612 of 1300 MHz, load 35%")
    gpu = describe_device(probe=probe)["jetson"]["gpu"]
    assert gpu == {"load_percent": 34.7, "cur_mhz": 612, "min_mhz": 306, "max_mhz": 1300}


def test_a_jetson_without_readable_gpu_files_says_nothing_about_them(jetson):
    probe, install = jetson
    install()
    checks = _by_name(doctor.run_doctor(probe, smoke=False))
    assert "GPU" not in checks["power/clocks"].detail


def test_doctor_says_whether_polygraphy_is_there_for_builds(jetson, monkeypatch):
    probe, install = jetson
    install()
    assert _by_name(doctor.run_doctor(probe, smoke=False))["Polygraphy"].status == "OK"
    real = tensorrt_env._import_module

    def no_polygraphy(name):
        if name.startswith("polygraphy"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real(name)

    monkeypatch.setattr(tensorrt_env, "_import_module", no_polygraphy)
    finding = _by_name(doctor.run_doctor(probe, smoke=False))["Polygraphy"]
    assert finding.status == "missing" and "pip install polygraphy" in finding.line()
