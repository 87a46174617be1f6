"""Users, their API keys and their web sign-ins, in the database.

Every change is one transaction. Secrets are never stored: passwords as argon2 hashes,
keys and sign-in tokens as SHA-256 digests (see :mod:`mimir.auth.credentials`). Removing a
user removes their keys and sign-ins; their tutoring sessions stay (teachers and admins
can still read them). The last admin cannot be removed or demoted.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from mimir.auth import credentials
from mimir.auth.roles import ROLES, Principal
from mimir.errors import AuthenticationError, InvalidInputError, NotFoundError
from mimir.storage.db import Database

#: How long a web sign-in lasts.
LOGIN_LIFETIME_S = 12 * 3600.0


@dataclass(frozen=True)
class User:
    id: str
    name: str
    role: str
    created_at: float
    updated_at: float

    @property
    def principal(self) -> Principal:
        return Principal(user_id=self.id, name=self.name, role=self.role)


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    user_name: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"unknown role '{role}'; valid roles: {', '.join(ROLES)}")
    return role


class AccountStore:
    def __init__(self, db: Database):
        self.db = db

    # -- users -------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password: str) -> User:
        credentials.check_name(name)
        check_role(role)
        password_hash = credentials.hash_password(password)
        now = time.time()
        user_id = f"u-{uuid.uuid4().hex[:12]}"
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise InvalidInputError(f"a user named '{name}' already exists")
            conn.execute(
                "INSERT INTO users (id, name, role, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, name, role, password_hash, now, now),
            )
        return self.get_user(name)

    def get_user(self, name: str) -> User:
        rows = self.db.read("SELECT * FROM users WHERE name = ?", (name,))
        if not rows:
            raise NotFoundError(f"no user '{name}'; `mimir users list` shows the existing ones")
        return _user(rows[0])

    def user_by_id(self, user_id: str) -> User | None:
        rows = self.db.read("SELECT * FROM users WHERE id = ?", (user_id,))
        return _user(rows[0]) if rows else None

    def list_users(self) -> list[User]:
        return [_user(r) for r in self.db.read("SELECT * FROM users ORDER BY name")]

    def count_users(self) -> int:
        return int(self.db.read("SELECT COUNT(*) AS n FROM users")[0]["n"])

    def set_password(self, name: str, password: str) -> User:
        """New password; every web sign-in of the user ends (keys stay)."""
        password_hash = credentials.hash_password(password)
        user = self.get_user(name)
        with self.db.write() as conn:
            conn.execute(
                "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?", (password_hash, time.time(), user.id)
            )
            conn.execute("DELETE FROM web_logins WHERE user_id = ?", (user.id,))
        return self.get_user(name)

    def remove_user(self, name: str) -> User:
        """Remove a user with their keys and sign-ins. Refuses to remove the last admin."""
        user = self.get_user(name)
        with self.db.write() as conn:
            if user.role == "admin":
                admins = conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetchone()[0]
                if admins <= 1:
                    raise InvalidInputError(
                        f"'{name}' is the last admin; add another admin first (mimir users add NAME --role admin)"
                    )
            conn.execute("DELETE FROM api_keys WHERE user_id = ?", (user.id,))
            conn.execute("DELETE FROM web_logins WHERE user_id = ?", (user.id,))
            conn.execute("DELETE FROM users WHERE id = ?", (user.id,))
        return user

    def authenticate(self, name: str, password: str) -> User:
        """The user whose name and password these are, else AuthenticationError (no detail)."""
        rows = self.db.read("SELECT * FROM users WHERE name = ?", (name,)) if isinstance(name, str) else []
        stored = rows[0]["password_hash"] if rows else None
        if not credentials.verify_password(stored, password):
            raise AuthenticationError("wrong user name or password")
        return _user(rows[0])

    # -- API keys ----------------------------------------------------------------------
    def create_key(self, name: str) -> tuple[ApiKeyInfo, str]:
        """A new key for user ``name``: its info and the key itself (shown once, never stored)."""
        user = self.get_user(name)
        key_id, key, secret_digest = credentials.new_api_key()
        now = time.time()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO api_keys (id, user_id, secret_digest, created_at) VALUES (?, ?, ?, ?)",
                (key_id, user.id, secret_digest, now),
            )
        return ApiKeyInfo(key_id, user.name, now, None), key

    def list_keys(self) -> list[ApiKeyInfo]:
        rows = self.db.read(
            "SELECT k.id, u.name AS user_name, k.created_at, k.revoked_at FROM api_keys k "
            "JOIN users u ON u.id = k.user_id ORDER BY k.created_at"
        )
        return [ApiKeyInfo(r["id"], r["user_name"], r["created_at"], r["revoked_at"]) for r in rows]

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        rows = self.db.read(
            "SELECT k.id, u.name AS user_name, k.created_at, k.revoked_at FROM api_keys k "
            "JOIN users u ON u.id = k.user_id WHERE k.id = ?",
            (key_id,),
        )
        if not rows:
            raise NotFoundError(f"no API key '{key_id}'; `mimir keys list` shows the existing ones")
        now = time.time()
        with self.db.write() as conn:
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id))
        r = rows[0]
        return ApiKeyInfo(r["id"], r["user_name"], r["created_at"], r["revoked_at"] or now)

    def user_for_key(self, key: str) -> User:
        """The owner of an active key, else AuthenticationError."""
        key_id, presented = credentials.parse_api_key(key)
        rows = self.db.read(
            "SELECT u.*, k.secret_digest FROM api_keys k JOIN users u ON u.id = k.user_id "
            "WHERE k.id = ? AND k.revoked_at IS NULL",
            (key_id,),
        )
        if not rows or not credentials.same_digest(rows[0]["secret_digest"], presented):
            raise AuthenticationError("missing or invalid API key")
        return _user(rows[0])

    # -- web sign-ins ------------------------------------------------------------------
    def start_login(self, user: User, *, lifetime_s: float = LOGIN_LIFETIME_S) -> str:
        """A new sign-in token for the cookie (its digest is stored)."""
        token, token_digest = credentials.new_token()
        now = time.time()
        with self.db.write() as conn:
            conn.execute("DELETE FROM web_logins WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO web_logins (token_digest, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (token_digest, user.id, now, now + lifetime_s),
            )
        return token

    def user_for_login(self, token: str) -> User | None:
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            return None
        rows = self.db.read(
            "SELECT u.* FROM web_logins w JOIN users u ON u.id = w.user_id "
            "WHERE w.token_digest = ? AND w.expires_at > ?",
            (credentials.digest(token), time.time()),
        )
        return _user(rows[0]) if rows else None

    def end_login(self, token: str) -> None:
        if isinstance(token, str) and len(token) <= 100:
            with self.db.write() as conn:
                conn.execute("DELETE FROM web_logins WHERE token_digest = ?", (credentials.digest(token),))


def _user(row) -> User:
    return User(row["id"], row["name"], row["role"], row["created_at"], row["updated_at"])
