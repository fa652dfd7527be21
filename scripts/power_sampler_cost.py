"""CPU cost of the always-on power sampler, and of the governor's per-batch hooks.

    PYTHONPATH=src python scripts/power_sampler_cost.py [--seconds 10] [--rate 50]

Uses this host's sensor (INA260 hwmon, PYNQ rail, RAPL); with none, it builds a fake INA260
hwmon folder in a temporary directory so the same read path (three sysfs text files, integer
parsing) is timed. Prints one JSON object: the sampler thread's CPU seconds per wall second
(``time.thread_time``) and per sample, and the mean time of one before_batch + after_batch pair
(scripted sensor, no pauses).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sarvessel.runtime.io.outputs import json_safe
from sarvessel.runtime.power import (
    Activity,
    Ina260Sensor,
    ManualClock,
    PowerGovernor,
    ScriptedSensor,
    SensorKind,
    detect_sensor,
    measure_sampler_cost,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="sampling time (s)")
    ap.add_argument("--rate", type=float, default=20.0, help="sampling rate (Hz)")
    ap.add_argument("--hooks", type=int, default=20000, help="hook pairs to time")
    args = ap.parse_args()
    if args.seconds <= 0 or args.rate <= 0 or args.hooks <= 0:
        ap.error("--seconds, --rate and --hooks must be > 0")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        sensor = detect_sensor()
        if sensor.kind is SensorKind.NONE:
            d = Path(tmp) / "sys/class/hwmon/hwmon0"
            d.mkdir(parents=True)
            for name, value in (("name", "ina260_u14"), ("power1_input", 4820000),
                                ("curr1_input", 964), ("in1_input", 5000)):
                (d / name).write_text(f"{value}\n")
            sensor = Ina260Sensor(d)
            out["note"] = "no sensor on this host: fake INA260 hwmon files in a temp folder"
        cost = measure_sampler_cost(sensor, args.seconds, interval_s=1.0 / args.rate)
    out["sampler"] = cost.to_dict()

    clock = ManualClock()
    act = Activity(clock)
    gov = PowerGovernor(ScriptedSensor(4.3, 0.5, activity=act, clock=clock), 9.0, 5.0,
                        clock=clock, activity=act)
    with gov:
        t0 = time.perf_counter()
        for _ in range(args.hooks):
            gov.before_batch(8)
            clock.advance(0.1)
            gov.after_batch(8)
            clock.advance(0.05)
        dt = time.perf_counter() - t0
    out["governor_hooks"] = {"pairs": args.hooks, "us_per_pair": round(1e6 * dt / args.hooks, 1),
                             "trace_samples": len(gov.sampler.trace)}
    print(json.dumps(json_safe(out), indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
