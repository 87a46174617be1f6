"""The model inventory the edges show: every configured model with its roles, source,
estimate, and measured size (from the resident model, or from the last load on record).

Shared by ``mimir models`` and the web app's Models tab.
"""

from __future__ import annotations

from typing import Any

from mimir.errors import MimirError, StorageError
from mimir.storage.telemetry_store import MeasuredSize, TelemetryStore


def measured_history(app) -> dict[str, MeasuredSize]:
    """Per model, the measured size of its last load in any earlier run (from the store).

    Empty when the database cannot be opened: ``mimir models`` still works on a read-only home.
    """
    try:
        return TelemetryStore(app.db).last_measured_sizes()
    except StorageError:
        return {}


def record_history(app) -> None:
    """Start telemetry (so the manager's loads are stored), if the database is usable."""
    try:
        app.telemetry
    except StorageError:
        pass


def model_rows(app, *, load: bool = False) -> list[dict[str, Any]]:
    manager = app.manager
    measured: dict[str, int] = {}
    if load:
        record_history(app)  # the loads below are stored, so later runs show their sizes
        for model_id in manager.specs:
            with manager.use(model_id):
                pass
            resident = manager.status().get(model_id)
            if resident is not None:
                measured[model_id] = resident.measured_bytes
    status = manager.status()
    history = measured_history(app)  # last measured load per model, from earlier runs
    rows = []
    for model_id, spec in manager.specs.items():
        error = None
        estimate = None
        try:
            estimate = manager.estimate(model_id)
        except MimirError as exc:
            error = str(exc)
        resident = status.get(model_id)
        rows.append(
            {
                "id": model_id,
                "backend": spec.backend,
                "roles": [role for role, mid in app.settings.roles.items() if mid == model_id],
                "source": spec.source.describe(),
                "context_length": spec.context_length,
                "device": estimate.device if estimate else None,
                "estimate_bytes": estimate.total_bytes if estimate else None,
                "estimate_parts": {
                    "weights_bytes": estimate.weights_bytes,
                    "kv_cache_bytes": estimate.kv_cache_bytes,
                    "overhead_bytes": estimate.overhead_bytes,
                }
                if estimate
                else None,
                "measured_bytes": resident.measured_bytes
                if resident
                else measured.get(model_id, history[model_id].measured_bytes if model_id in history else None),
                # Where measured_bytes comes from: the resident model, or the last load on record.
                "measured_from": "resident" if resident else ("history" if model_id in history else None),
                "resident": resident is not None,
                "in_use": resident.in_use if resident else 0,
                "pinned": spec.pinned,
                "error": error,
            }
        )
    return rows
