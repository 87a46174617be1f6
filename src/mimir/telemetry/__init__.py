"""Per-step memory telemetry: probes, step and turn records, the recorder and its sinks.

See ``docs/telemetry.md``. The names most code needs::

    from mimir.telemetry import Telemetry, LogSink, SqliteSink, turn_json
"""

from mimir.core.records import StepRecord, TurnRecord, step_json, turn_json
from mimir.telemetry.probes import CudaProbe, NvmlProbe, Probe, ProcessProbe, default_probes
from mimir.telemetry.recorder import StepRecorder, Telemetry, TurnRecorder
from mimir.telemetry.setup import TelemetryOptions, parse_telemetry_options, telemetry_from_settings
from mimir.telemetry.sinks import LogSink, QueuedSink, Sink, SqliteSink, TrackioSink, format_step_line

__all__ = [
    "CudaProbe",
    "LogSink",
    "NvmlProbe",
    "Probe",
    "ProcessProbe",
    "QueuedSink",
    "Sink",
    "SqliteSink",
    "StepRecord",
    "StepRecorder",
    "Telemetry",
    "TelemetryOptions",
    "TrackioSink",
    "TurnRecord",
    "TurnRecorder",
    "default_probes",
    "format_step_line",
    "parse_telemetry_options",
    "step_json",
    "telemetry_from_settings",
    "turn_json",
]
