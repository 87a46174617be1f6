"""Where the state lives: the SQLite file under ``MIMIR_HOME`` (default) or a PostgreSQL URL.

A :class:`StorageTarget` is what :meth:`mimir.storage.db.Database.open` opens. Its password
never comes from the config file: it comes from ``MIMIR_DATABASE_PASSWORD``, from a file named
by ``[storage] password_file`` / ``MIMIR_DATABASE_PASSWORD_FILE`` (a mounted secret), from a URL
given in the environment, or from libpq's own ``PGPASSWORD`` / ``~/.pgpass``. Whatever is
shown (``label``, errors, ``mimir db check``) is the URL with the password redacted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres")
_SECRET_QUERY_KEYS = {"password", "sslpassword"}
REDACTED = "***"


@dataclass(frozen=True)
class StorageTarget:
    """A SQLite file (``path``) or a PostgreSQL server (``url``, password kept apart)."""

    engine: str  # "sqlite" or "postgresql"
    path: Path | None = None
    #: The URL without its password.
    url: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def sqlite(cls, path: str | os.PathLike) -> StorageTarget:
        return cls("sqlite", path=Path(path).expanduser())

    @classmethod
    def parse(cls, value: str | os.PathLike, *, password: str | None = None) -> StorageTarget:
        """A ``postgresql://`` URL, a ``sqlite:///path`` URL, or a plain file path."""
        text = os.fspath(value)
        if not isinstance(text, str):
            raise ValueError("a storage target must be text")
        scheme = text.split(":", 1)[0].lower() if "://" in text else ""
        if scheme == "sqlite":
            rest = text.split("://", 1)[1]  # as SQLAlchemy: sqlite:///rel.db, sqlite:////abs.db
            path = rest[1:] if rest.startswith("/") else rest
            if not path:
                raise ValueError("a sqlite URL names a file: sqlite:////abs/path/mimir.db")
            return cls.sqlite(path)
        if scheme in POSTGRES_SCHEMES:
            url, inline = strip_password(text)
            if not urlsplit(url).hostname and "host=" not in url:
                raise ValueError("a postgresql URL needs a host: postgresql://user@host:5432/dbname")
            return cls("postgresql", url=url, password=password or inline)
        if scheme:
            raise ValueError(f"unknown storage URL scheme '{scheme}'; use postgresql:// or a SQLite file path")
        return cls.sqlite(text)

    @property
    def label(self) -> str:
        """What may be shown: the file path, or the URL with no password in it."""
        return str(self.path) if self.engine == "sqlite" else redact_url(self.url or "")

    def conninfo(self) -> dict[str, str]:
        """Keyword arguments for ``psycopg.connect`` (the password as its own argument)."""
        out = {"conninfo": self.url or ""}
        if self.password:
            out["password"] = self.password
        return out

    def scrub(self, text: str) -> str:
        """``text`` with the password (if any) replaced, for messages that quote a driver."""
        if self.password:
            text = text.replace(self.password, REDACTED)
            quoted = quote(self.password, safe="")
            if quoted != self.password:
                text = text.replace(quoted, REDACTED)
        return text


def strip_password(url: str) -> tuple[str, str | None]:
    """``url`` without a password (in the userinfo or the query), and that password."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password is not None else None
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = []
    for key, val in query:
        if key.lower() == "password":
            password = password or val
        elif key.lower() not in _SECRET_QUERY_KEYS:
            kept.append((key, val))
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(kept), parts.fragment)), password


def redact_url(url: str) -> str:
    """The URL with any password shown as ``***`` (safe for logs, errors and pages)."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "(unparseable database URL)"
    netloc = parts.netloc
    if has_password:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{host}"
    query = "&".join(
        f"{k}={REDACTED if k.lower() in _SECRET_QUERY_KEYS else v}" for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_inline_password(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.password is not None or bool(re.search(r"(^|&)password=", parts.query, re.IGNORECASE))
    except ValueError:
        return False


def storage_target(settings, env=None) -> StorageTarget:
    """The target ``settings`` name: ``[storage] url`` / ``MIMIR_DATABASE_URL``, else ``home/mimir.db``.

    The password is read now (so a rotated secret file is picked up on restart):
    ``MIMIR_DATABASE_PASSWORD``, else the URL from the environment, else
    ``[storage] password_file``, else libpq's ``PGPASSWORD`` / ``~/.pgpass``.
    """
    from mimir.errors import ConfigError

    env = os.environ if env is None else env
    storage = settings.storage
    if storage.url is None:
        return StorageTarget.sqlite(settings.db_path)
    password = env.get("MIMIR_DATABASE_PASSWORD") or None
    if password is None and storage.url_password:
        password = storage.url_password
    if password is None and storage.password_file is not None:
        try:
            password = storage.password_file.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("storage.password_file", f"cannot read {storage.password_file}: {exc.__class__.__name__}") from None
    try:
        return StorageTarget.parse(storage.url, password=password)
    except ValueError as exc:
        raise ConfigError("storage.url", str(exc)) from None
