"""Storage: one database (SQLite under ``MIMIR_HOME``, or PostgreSQL), migrated on open, and its stores."""

from mimir.storage.db import Database
from mimir.storage.telemetry_store import MeasuredSize, TelemetryStore

__all__ = ["Database", "MeasuredSize", "TelemetryStore"]
