"""The model manager (leases, loading, budget) and its pure policy functions."""

from mimir.runtime.manager import ManagerStatus, ModelEvent, ModelManager, ResidentModel

__all__ = ["ManagerStatus", "ModelEvent", "ModelManager", "ResidentModel"]
