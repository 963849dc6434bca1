"""Energy per image on Jetson: INA3221 rails read from a fake sysfs tree built here (layouts as jetson-stats
reads them, jtop/core/power.py), sampled while `bench` times a real ONNX in onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eca_deploy.cli.main import main
from eca_deploy.runtime.base import OpenOptions
from eca_deploy.runtime.harness.bench import BenchConfig, Timing, run_bench
from eca_deploy.runtime.harness.device import Probe, describe_device
from eca_deploy.runtime.harness.doctor import tiny_eca_onnx
from eca_deploy.runtime.harness.power import NO_RAILS, find_rails, power_meter
from eca_deploy.runtime.harness.report import markdown, new_report, validate_report, write_report

# AGX Orin on JetPack 6 (hwmon): VDD_IN is the module's input; channel 7 of the second monitor is the sum
# of shunt voltages, and "NC" channels are not connected.
ORIN = {"1-0040": {1: ("VDD_GPU_SOC", 5000, 1200), 2: ("VDD_CPU_CV", 5000, 600), 3: ("VIN_SYS_5V0", 5000, 900),
                   7: ("sum of shunt voltages", 0, 0)},
        "1-0041": {1: ("NC", 0, 0), 2: ("VDDQ_VDD2_1V8AO", 5000, 200), 3: ("VDD_IN", 19000, 800)}}


def _write(path: Path, text) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


def orin_sysfs(root: Path) -> Path:
    """/sys/bus/i2c/devices/<addr>/{name, hwmon/hwmonN/in*_label, in*_input (mV), curr*_input (mA)}."""
    for n, (address, channels) in enumerate(ORIN.items()):
        device = root / "sys/bus/i2c/devices" / address
        _write(device / "name", "ina3221")
        for channel, (label, millivolts, milliamps) in channels.items():
            _write(device / f"hwmon/hwmon{n + 3}/in{channel}_label", label)
            _write(device / f"hwmon/hwmon{n + 3}/in{channel}_input", millivolts)
            _write(device / f"hwmon/hwmon{n + 3}/curr{channel}_input", milliamps)
    _write(root / "sys/bus/i2c/devices/0-0050/name", "eeprom")  # another I2C device
    return root


def nano_sysfs(root: Path) -> Path:
    """JetPack 4 (iio): rail_name_N, in_voltageN_input, in_currentN_input, in_powerN_input (mW)."""
    device = root / "sys/bus/i2c/devices/6-0040"
    _write(device / "name", "ina3221x")
    for channel, (name, milliwatts) in enumerate((("POM_5V_IN", 4200), ("POM_5V_GPU", 1500), ("POM_5V_CPU", 900))):
        _write(device / f"iio:device0/rail_name_{channel}", name)
        _write(device / f"iio:device0/in_power{channel}_input", milliwatts)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_eca_onnx(tmp_path_factory.mktemp("power") / "tiny.onnx")


def test_rails_of_jetpack_5_6_and_jetpack_4(tmp_path):
    orin = find_rails(Probe(root=orin_sysfs(tmp_path / "orin")))
    assert [r.name for r in orin] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO", "VDD_IN"]
    watts = {r.name: r.watts(Probe(root=tmp_path / "orin")) for r in orin}
    assert watts["VDD_IN"] == pytest.approx(15.2) and watts["VDD_GPU_SOC"] == pytest.approx(6.0)
    nano = find_rails(Probe(root=nano_sysfs(tmp_path / "nano")))
    assert {r.name: r.watts(Probe(root=tmp_path / "nano")) for r in nano} == \
        {"POM_5V_IN": pytest.approx(4.2), "POM_5V_GPU": pytest.approx(1.5), "POM_5V_CPU": pytest.approx(0.9)}
    assert find_rails(Probe(root=tmp_path / "desktop")) == []


def test_bench_on_a_fake_jetson_reports_power_energy_per_image_and_fps_per_watt(tiny, tmp_path):
    root = orin_sysfs(tmp_path / "sys-root")
    result = run_bench(BenchConfig(model=str(tiny), timing=Timing(batches=(1, 4), iterations=20, warmup=1),
                                   options=OpenOptions(provider="cpu", threads=1), sysfs_root=str(root)))
    assert result.power["total"] == "VDD_IN" and "NC" not in result.power["rails"]
    for entry in result.entries:
        assert entry["power_w"] == pytest.approx(15.2)  # the module input, not the sum of rails
        assert entry["rails_w"]["VDD_CPU_CV"] == pytest.approx(3.0) and entry["power_samples"] >= 2
        assert entry["mj_per_image"] == pytest.approx(15.2 / entry["fps"] * 1e3)
        assert entry["fps_per_w"] == pytest.approx(entry["fps"] / 15.2)
    device = {**describe_device(1, Probe(root=root)), "power": result.power}
    report = validate_report(new_report("bench", device, [result.row()], imgsz=result.imgsz))
    text = markdown(report)
    assert "| W | mJ/img | FPS/W |" in text
    first = result.entries[0]
    assert f"| 15.20 | {first['mj_per_image']:.1f} | {first['fps_per_w']:.1f} |" in text
    assert "W is VDD_IN" in text
    written = write_report(report, tmp_path / "out")
    assert written["energy"].stat().st_size > 0 and "report_energy.png" in written["markdown"].read_text()


def test_without_rails_the_fields_are_absent_and_the_report_says_why(tiny, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", str(tiny), "--iterations", "3", "--warmup", "0", "--provider", "cpu", "--output", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and f"power: not measured: {NO_RAILS}" in stdout
    report = validate_report(json.loads(out.read_text()))
    (entry,) = report["rows"][0]["bench"]["batches"]
    assert not {"power_w", "mj_per_image", "fps_per_w", "rails_w"} & set(entry)
    assert report["devices"][0]["power"] == {"unavailable": NO_RAILS}
    text = markdown(report)
    assert "mJ/img" not in text and "power not measured on" in text and "INA3221" in text
    assert power_meter(Probe(root=tmp_path))[0] is None
