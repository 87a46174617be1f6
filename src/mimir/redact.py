"""Credentials out of text: ``redact_secrets("https://user:secret@host/v1")`` gives
``"https://user:***@host/v1"``.

Model URLs may carry a user and password (``https://user:secret@host``) or a key in the
query (``?api_key=...``); the user name stays (it says which account), the secret goes.
Every place such a URL can surface (the Models tab, error messages, log lines, error text
stored in the database) passes through here. A leaf module:
it imports nothing from Mimir. The patterns are linear in their input (possessive
quantifiers, bounded scheme), so they are safe on any text.
"""

from __future__ import annotations

import re

MASK = "***"
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]{0,30}://[^/\s@:?#]*+):[^/\s@?#]++@")
_QUERY_SECRET = re.compile(
    r"([?&](?:api[_-]?key|key|token|access[_-]?token|auth|password|passwd|secret|sig|signature)=)[^&\s#]++",
    re.IGNORECASE,
)


def redact_secrets(text: str) -> str:
    """``text`` with URL passwords and secret query values replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(rf"\1:{MASK}@", text)
    return _QUERY_SECRET.sub(rf"\1{MASK}", text)
