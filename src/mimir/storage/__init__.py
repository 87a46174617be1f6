"""SQLite storage under ``MIMIR_HOME``: one database, migrated on open, and its stores."""

from mimir.storage.db import Database
from mimir.storage.telemetry_store import MeasuredSize, TelemetryStore

__all__ = ["Database", "MeasuredSize", "TelemetryStore"]
