"""Power room: sensors, a sampler, a governor that holds a watt budget, energy reports, and a
KV260 power model for planning without a board. Runs on the board and on the ground (numpy,
Pillow; PYNQ only inside :class:`PynqRailSensor` / :class:`PynqFabricClock`).

Follow one tile: :func:`detect_sensor` picks the sensor; :class:`PowerGovernor` measures the
idle draw at ``start()``, then the pipeline calls ``before_batch(n)`` / ``after_batch(n)``
around every backend call (pausing there keeps the moving average under the budget) and
``mark_row(i)`` after each tile row; ``report()`` gives the :class:`EnergyReport` for the scene
summary and :func:`write_power_trace_png` draws the trace. :mod:`.model` projects W and J per
scene from tiles/s. See ``docs/power.md``.
"""

from __future__ import annotations

from sarvessel.runtime.power.clock import Clock, ManualClock, SystemClock
from sarvessel.runtime.power.errors import PowerBudgetError, PowerError, SensorGone
from sarvessel.runtime.power.governor import (
    DEFAULT_WINDOW_S,
    FabricClock,
    PowerGovernor,
    PynqFabricClock,
)
from sarvessel.runtime.power.model import (
    KV260_PUBLISHED,
    PAPER_CLAIM,
    PowerModel,
    ScenePowerProjection,
    fit_from_trace,
    project_scene,
)
from sarvessel.runtime.power.report import EnergyReport, write_power_trace_png
from sarvessel.runtime.power.sensors import (
    NO_SENSOR,
    Activity,
    Ina260Sensor,
    NullSensor,
    PowerSensor,
    PynqRailSensor,
    RaplSensor,
    ReplaySensor,
    Sample,
    ScriptedSensor,
    SensorKind,
    detect_sensor,
)
from sarvessel.runtime.power.trace import (
    PowerTrace,
    Sampler,
    max_window_average,
    measure_sampler_cost,
    write_trace_csv,
)

__all__ = [
    "DEFAULT_WINDOW_S",
    "KV260_PUBLISHED",
    "NO_SENSOR",
    "PAPER_CLAIM",
    "Activity",
    "Clock",
    "EnergyReport",
    "FabricClock",
    "Ina260Sensor",
    "ManualClock",
    "NullSensor",
    "PowerBudgetError",
    "PowerError",
    "PowerGovernor",
    "PowerModel",
    "PowerSensor",
    "PowerTrace",
    "PynqFabricClock",
    "PynqRailSensor",
    "RaplSensor",
    "ReplaySensor",
    "Sample",
    "Sampler",
    "ScenePowerProjection",
    "ScriptedSensor",
    "SensorGone",
    "SensorKind",
    "SystemClock",
    "detect_sensor",
    "fit_from_trace",
    "max_window_average",
    "measure_sampler_cost",
    "project_scene",
    "write_power_trace_png",
    "write_trace_csv",
]
