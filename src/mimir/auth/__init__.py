"""Accounts and access: roles and what each may do, credentials (argon2 password hashes,
API keys, sign-in tokens), login throttling, and the web/API guard.

- :mod:`mimir.auth.roles`: ``student`` < ``teacher`` < ``admin``, :class:`Principal` (who
  is asking) and :func:`require` (the check every handler makes);
- :mod:`mimir.auth.credentials`: name/password rules, hashing, key and token formats;
- :mod:`mimir.auth.throttle`: slows repeated sign-in failures per address and per user;
- :mod:`mimir.auth.web`: the ASGI guard in front of the web app and ``/v1`` (sign-in
  cookie or bearer key, Host/Origin checks) and the sign-in page.

Users, keys, sign-ins and the audit log are stored by :mod:`mimir.storage.accounts` and
:mod:`mimir.storage.audit`.
"""
