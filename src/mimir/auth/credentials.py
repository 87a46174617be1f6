"""Names, passwords, API keys and sign-in tokens: the rules and the hashing.

- Passwords are hashed with argon2id (``argon2-cffi``'s defaults, which follow RFC 9106's
  recommendation); the hash carries its own parameters and salt.
- API keys look like ``mimir-<key id>-<secret>``: the id (public, shown by ``mimir keys
  list``) finds the row, the 256-bit random secret is compared by its SHA-256 digest in
  constant time. A slow hash adds nothing to a secret that long and would cost every API
  request tens of milliseconds.
- Sign-in tokens (the web app's cookie) are 256-bit random strings stored by their digest
  too, so a copy of the database signs nobody in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata

from mimir.errors import AuthenticationError, InvalidInputError

MAX_NAME_CHARS = 64
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
KEY_PREFIX = "mimir-"
_NAME = re.compile(r"[\w.@-]+")
_KEY = re.compile(r"mimir-([0-9a-f]{12})-([A-Za-z0-9_-]{43})")


def check_name(name: str) -> str:
    """A valid user name (letters, digits, ``. _ - @``; 1-64 characters) or InvalidInputError."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("the user name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidInputError(f"the user name is too long ({len(name)} characters, at most {MAX_NAME_CHARS})")
    if _has_control(name):
        raise InvalidInputError("the user name contains control characters")
    if not _NAME.fullmatch(name):
        raise InvalidInputError("a user name may contain only letters, digits and . _ - @")
    return name


def check_password(password: str) -> str:
    """A usable password (8-1024 characters, no control characters) or InvalidInputError."""
    if not isinstance(password, str) or not password:
        raise InvalidInputError("the password is empty")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInputError(f"the password is too long (at most {MAX_PASSWORD_CHARS} characters)")
    if _has_control(password):
        raise InvalidInputError("the password contains control characters")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInputError(f"the password is too short (at least {MIN_PASSWORD_CHARS} characters)")
    return password


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def _hasher():
    try:
        from argon2 import PasswordHasher
    except ImportError:  # a core dependency; only a broken install gets here
        from mimir.errors import MissingExtraError

        raise MissingExtraError("argon2-cffi", "ui", "Password hashing") from None
    return PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher().hash(check_password(password))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches. With ``stored_hash=None`` (no such user) a dummy hash
    is checked, so an unknown name takes as long as a wrong password."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    if not isinstance(password, str) or len(password) > MAX_PASSWORD_CHARS:
        return False
    hasher = _hasher()
    try:
        ok = hasher.verify(stored_hash or _dummy_hash(), password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and stored_hash is not None


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(_hasher().hash(secrets.token_urlsafe(16)))
    return _DUMMY[0]


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_api_key() -> tuple[str, str, str]:
    """A new key: ``(key_id, full key to hand out once, digest to store)``."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}-{secret}", digest(secret)


def parse_api_key(key: str) -> tuple[str, str]:
    """``(key_id, secret digest)`` of a presented key, or AuthenticationError."""
    match = _KEY.fullmatch(key.strip()) if isinstance(key, str) and len(key) < 200 else None
    if match is None:
        raise AuthenticationError("missing or invalid API key")
    return match.group(1), digest(match.group(2))


def new_token() -> tuple[str, str]:
    """A sign-in token: ``(token for the cookie, digest to store)``."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)
