"""The model manager (leases, loading, budget) and its pure policy functions."""

from mimir.core.events import ModelEvent
from mimir.runtime.manager import ManagerStatus, ModelManager, ResidentModel

__all__ = ["ManagerStatus", "ModelEvent", "ModelManager", "ResidentModel"]
