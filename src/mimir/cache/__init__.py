"""Model cache inspector: what occupies disk, what the app still uses, and safe pruning.

``scan_cache(...)`` -> :class:`CacheReport`; ``plan_cleanup(report, ...)`` ->
:class:`CleanupPlan`; ``plan.execute()`` -> :class:`CleanupResult`. Needs the ``cache``
extra (``huggingface_hub``), imported only when a scan runs.
"""

from mimir.cache.cleanup import (
    CleanupPlan,
    CleanupResult,
    FileDeletion,
    PlannedPath,
    RepoDeletion,
    RevisionDeletion,
    SkippedPath,
    old_revisions_of,
    plan_cleanup,
)
from mimir.cache.report import (
    CachedFile,
    CacheReport,
    CacheWarning,
    LocalModelFile,
    MissingModel,
    Reference,
    RepoEntry,
    RevisionEntry,
)
from mimir.cache.scan import scan_cache
from mimir.core.hub_cache import resolve_cache_dir

__all__ = [
    "CacheReport",
    "CacheWarning",
    "CachedFile",
    "CleanupPlan",
    "CleanupResult",
    "FileDeletion",
    "LocalModelFile",
    "MissingModel",
    "PlannedPath",
    "Reference",
    "RepoDeletion",
    "RepoEntry",
    "RevisionDeletion",
    "RevisionEntry",
    "SkippedPath",
    "old_revisions_of",
    "plan_cleanup",
    "resolve_cache_dir",
    "scan_cache",
]
