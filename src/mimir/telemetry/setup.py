"""Building telemetry from the ``[telemetry]`` table of ``mimir.toml``.

::

    [telemetry]
    sample_interval = "10ms"     # RSS peak sampling while a step runs; "off" = no sampler thread
    log = true                   # one INFO line per step on the mimir.telemetry logger
    store = true                 # step records in SQLite under MIMIR_HOME
    nvidia_smi = false           # last resort when NVML is missing: one subprocess per reading
    trackio_project = "mimir"    # export per-step metrics to trackio (extra: trackio)
    trackio_run = "laptop"       # optional run name
    otel = false                 # each turn as an OpenTelemetry trace (extra: otel)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mimir.errors import ConfigError
from mimir.units import parse_duration

if TYPE_CHECKING:
    from mimir.config import Settings
    from mimir.storage.db import Database
    from mimir.telemetry.recorder import Telemetry

_KEYS = {"sample_interval", "log", "store", "nvidia_smi", "trackio_project", "trackio_run", "otel"}


@dataclass(frozen=True)
class TelemetryOptions:
    sample_interval_s: float | None = 0.01
    log: bool = True
    store: bool = True
    nvidia_smi: bool = False
    trackio_project: str | None = None
    trackio_run: str | None = None
    otel: bool = False


def parse_telemetry_options(raw: Mapping[str, Any], source: str | None = None) -> TelemetryOptions:
    unknown = set(raw) - _KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"telemetry.{key}", f"unknown key; valid keys: {', '.join(sorted(_KEYS))}", source=source)

    def _bool(key: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"telemetry.{key}", "must be true or false", source=source)
        return value

    def _str(key: str) -> str | None:
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"telemetry.{key}", "must be a non-empty string", source=source)
        return value

    interval_raw = raw.get("sample_interval", 0.01)
    interval: float | None
    if interval_raw is False or (isinstance(interval_raw, str) and interval_raw.strip().lower() in {"off", "none"}):
        interval = None
    else:
        try:
            interval = parse_duration(interval_raw)
        except ValueError as exc:
            raise ConfigError("telemetry.sample_interval", f"{exc}; or 'off'", source=source) from None
        if interval <= 0:
            interval = None
    return TelemetryOptions(
        sample_interval_s=interval,
        log=_bool("log", True),
        store=_bool("store", True),
        nvidia_smi=_bool("nvidia_smi", False),
        trackio_project=_str("trackio_project"),
        trackio_run=_str("trackio_run"),
        otel=_bool("otel", False),
    )


def telemetry_from_settings(settings: Settings, db: Database | None = None) -> Telemetry:
    """A :class:`Telemetry` with the probes and sinks the settings ask for.

    ``db`` is needed when ``store`` is on. Raises ``MissingExtraError`` when a trackio project
    is configured but trackio is not installed.
    """
    from mimir.storage.telemetry_store import TelemetryStore
    from mimir.telemetry.probes import default_probes
    from mimir.telemetry.recorder import Telemetry
    from mimir.telemetry.sinks import LogSink, SqliteSink, TrackioSink

    options = parse_telemetry_options(settings.telemetry, str(settings.source) if settings.source else None)
    sinks = []
    if options.log:
        sinks.append(LogSink())
    if options.store:
        if db is None:
            raise ValueError("telemetry.store is on but no database was given")
        from mimir.storage.spool import SPOOL_NAME, Spool

        sinks.append(SqliteSink(TelemetryStore(db), spool=Spool(settings.home / SPOOL_NAME)))
    if options.trackio_project:
        sinks.append(TrackioSink(options.trackio_project, run_name=options.trackio_run))
    if options.otel:
        from mimir.telemetry.otel import OtelSink

        sinks.append(OtelSink())
    return Telemetry(
        probes=default_probes(nvidia_smi=options.nvidia_smi),
        sinks=sinks,
        sample_interval_s=options.sample_interval_s,
    )
