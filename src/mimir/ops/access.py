"""Who may use the operator actions (``/metrics``, pulling models in the web app).

These two functions are the one place the server asks. The user and role system (issue 10)
answers them once it exists; until then there are no users, so authentication is off and
nobody is an admin: ``/metrics`` is guarded by its bearer token alone, and the web app's
pull action follows :func:`may_pull`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mimir.app import MimirApp


def auth_enabled(app: MimirApp) -> bool:
    """Whether user authentication is on for this server."""
    return False


def is_admin(app: MimirApp, headers: Mapping[str, str]) -> bool:
    """Whether the request with these headers (cookie, Authorization) comes from an admin."""
    return False


def may_pull(app: MimirApp, headers: Mapping[str, str]) -> bool:
    """Pulling downloads to disk and edits the config file: admins only when authentication
    is on; without authentication the server has a single operator (it listens on
    127.0.0.1 unless told otherwise), who may."""
    return is_admin(app, headers) if auth_enabled(app) else True
