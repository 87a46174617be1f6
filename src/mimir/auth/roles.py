"""Roles, who is asking, and the one check every handler makes.

=========  ==========================================================================
student    chats; sees only their own sessions and the memory of their own turns
teacher    also reads every session (read-only) and the whole Memory tab
admin      also prunes the cache, unloads models, sees the Cache and Models tabs
=========  ==========================================================================

Users themselves are managed with the ``mimir users`` CLI on the server machine. With
``[server] auth = "none"`` (loopback only) the single local user is an admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from mimir.errors import PermissionDeniedError

ROLES: tuple[str, ...] = ("student", "teacher", "admin")

#: The lowest role allowed each action. Handlers name the action they perform.
PERMISSIONS: dict[str, str] = {
    "chat": "student",
    "read_all_sessions": "teacher",
    "read_all_memory": "teacher",
    "view_cache": "admin",
    "prune_cache": "admin",
    "view_models": "admin",
    "unload_model": "admin",
    "pull_model": "admin",
    "manage_users": "admin",
}
_ACTION_TEXT = {
    "chat": "chatting",
    "read_all_sessions": "reading other users' sessions",
    "read_all_memory": "the whole Memory tab",
    "view_cache": "the Cache tab",
    "prune_cache": "pruning the model cache",
    "view_models": "the Models tab",
    "unload_model": "unloading a model",
    "pull_model": "pulling a model from the Hub",
    "manage_users": "managing users",
}


def role_rank(role: str) -> int:
    return ROLES.index(role)


@dataclass(frozen=True)
class Principal:
    """Who a request acts for. ``user_id=None`` is the local user of ``auth = "none"``."""

    user_id: str | None
    name: str
    role: str

    def can(self, action: str) -> bool:
        return role_rank(self.role) >= role_rank(PERMISSIONS[action])

    def owns(self, owner_id: str | None) -> bool:
        """Whether a session with ``owner_id`` is this principal's own (writable) session."""
        return owner_id == self.user_id

    @property
    def is_local(self) -> bool:
        return self.user_id is None


#: The single user of ``auth = "none"``: an admin, owning the sessions stored without an owner.
LOCAL_ADMIN = Principal(user_id=None, name="local", role="admin")


def require(principal: Principal | None, action: str) -> Principal:
    """``principal`` if it may perform ``action``; else :class:`PermissionDeniedError`."""
    from mimir.errors import AuthenticationError

    if principal is None:
        raise AuthenticationError("sign in first")
    if not principal.can(action):
        raise PermissionDeniedError(_ACTION_TEXT[action], principal.role, PERMISSIONS[action])
    return principal
