"""Board power during a benchmark: the INA3221 rails of a Jetson, sampled from sysfs while the timed loop runs.

Paths as jetson-stats reads them (rbonghi/jetson_stats jtop/core/power.py): every I2C device under
/sys/bus/i2c/devices whose ``name`` contains ina3221 carries its channels either in
``hwmon/hwmonN/`` (JetPack 5/6: ``inN_label``, ``inN_input`` mV, ``currN_input`` mA; "NC" channels and
channel 7, the sum of shunt voltages, are skipped) or in ``iio:deviceN/`` (JetPack 4: ``rail_name_N``,
``in_voltageN_input`` mV, ``in_currentN_input`` mA, ``in_powerN_input`` mW). The board's input rail
(VDD_IN on Orin and Xavier NX, POM_5V_IN on Nano/TX2/AGX Xavier) is its total; without one, the rails
are summed, as jetson-stats does (total_power).

Energy per image = mean total power / images per second; FPS/W = images per second / mean total power.
The mean includes the board's idle draw: it is what a deployment pays per image.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .device import Probe

I2C_DEVICES = "/sys/bus/i2c/devices"
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # the board's input, where the module has one (jtop total_power)
SUM_OF_SHUNTS = 7  # INA3221 hwmon channel 7: the sum of shunt voltages, not a rail
SAMPLE_INTERVAL_S = 0.05  # the INA3221 driver averages over ~1 ms conversions; 20 Hz is plenty for seconds-long loops
NO_RAILS = (f"no INA3221 power rails under {I2C_DEVICES} (not a Jetson, or a carrier board without the "
            "monitor); power, mJ/image and FPS/W need them")


@dataclass(frozen=True)
class Rail:
    name: str
    volt: str | None = None  # sysfs file, mV
    curr: str | None = None  # sysfs file, mA
    power: str | None = None  # sysfs file, mW (JetPack 4's iio layout)

    def watts(self, probe: Probe) -> float | None:
        if self.power:
            milliwatts = probe.number(self.power)
            return None if milliwatts is None else milliwatts / 1e3
        volt, curr = probe.number(self.volt), probe.number(self.curr)
        return None if volt is None or curr is None else volt * curr / 1e6


def find_rails(probe: Probe) -> list[Rail]:
    """Every INA3221 rail the board exposes, JetPack 5/6 (hwmon) or JetPack 4 (iio) layout."""
    rails = []
    for device in probe.listdir(I2C_DEVICES):
        path = f"{I2C_DEVICES}/{device}"
        if "ina3221" not in (probe.read(f"{path}/name") or ""):
            continue
        for item in probe.listdir(path):
            if item == "hwmon":
                rails += [r for sub in probe.listdir(f"{path}/hwmon") for r in _hwmon(probe, f"{path}/hwmon/{sub}")]
            elif item.startswith("iio:device"):
                rails += _iio(probe, f"{path}/{item}")
    return rails


def _hwmon(probe: Probe, path: str) -> list[Rail]:
    rails = []
    for item in probe.listdir(path):
        channel = item[2:-len("_label")] if item.startswith("in") and item.endswith("_label") else ""
        name = (probe.read(f"{path}/{item}") or "").strip()
        if not channel.isdigit() or int(channel) == SUM_OF_SHUNTS or not name or "NC" in name:
            continue
        rails.append(Rail(name, volt=f"{path}/in{channel}_input", curr=f"{path}/curr{channel}_input"))
    return rails


def _iio(probe: Probe, path: str) -> list[Rail]:
    rails = []
    for item in probe.listdir(path):
        channel = item.removeprefix("rail_name_")
        name = (probe.read(f"{path}/{item}") or "").strip()
        if item.startswith("rail_name_") and channel.isdigit() and name:
            rails.append(Rail(name, volt=f"{path}/in_voltage{channel}_input",
                              curr=f"{path}/in_current{channel}_input", power=f"{path}/in_power{channel}_input"))
    return rails


class PowerSampler:
    """Samples every rail on a background thread while the ``with`` body runs (plus once at each end, so a
    short loop still has two samples); :meth:`fields` turns the means into the bench entry's fields."""

    def __init__(self, rails: list[Rail], probe: Probe, interval: float = SAMPLE_INTERVAL_S):
        self.rails, self.probe, self.interval = rails, probe, interval
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        reading = {rail.name: rail.watts(self.probe) for rail in self.rails}
        self.samples.append({name: watts for name, watts in reading.items() if watts is not None})

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PowerSampler":
        self.samples, self._stop = [], threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def fields(self, fps: float) -> dict:
        """power_w (total), rails_w (mean per rail), mj_per_image, fps_per_w, power_samples; {} without readings."""
        names = [rail.name for rail in self.rails]
        rails = {name: _mean([s[name] for s in self.samples if name in s]) for name in names}
        rails = {name: watts for name, watts in rails.items() if watts is not None}
        if not rails:
            return {}
        total = next((rails[name] for name in TOTAL_RAILS if name in rails), None)
        if total is None:
            total = sum(rails.values())
        fields = {"power_w": total, "rails_w": rails, "power_samples": len(self.samples)}
        if total > 0:
            fields.update(mj_per_image=total / fps * 1e3, fps_per_w=fps / total)
        return fields


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def total_rail(rails: list[Rail]) -> str:
    """What power_w is: the board's input rail, or the sum of the rails found."""
    names = {rail.name for rail in rails}
    return next((name for name in TOTAL_RAILS if name in names), "sum of " + ", ".join(sorted(names)))


def power_meter(probe: Probe) -> tuple[PowerSampler | None, dict]:
    """(sampler, the report's ``power`` section): the rails found, or why nothing is measured."""
    rails = find_rails(probe)
    if not rails:
        return None, {"unavailable": NO_RAILS}
    return PowerSampler(rails, probe), {"rails": [rail.name for rail in rails], "total": total_rail(rails),
                                        "interval_s": SAMPLE_INTERVAL_S, "source": "INA3221 via sysfs"}
