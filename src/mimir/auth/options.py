"""The ``[server]`` keys this package owns (other keys of the table belong to other parts)::

    [server]
    auth = "password"                     # "none" (default: loopback only, no sign-in) or "password"
    allowed_hosts = ["tutor.example.edu"] # host names answered besides IP addresses and localhost
    login_lifetime = "12h"                # how long a web sign-in lasts
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mimir.errors import ConfigError
from mimir.units import parse_duration

AUTH_MODES = ("none", "password")


@dataclass(frozen=True)
class AuthOptions:
    #: ``none``: no sign-in, the single local user is an admin (loopback binds only);
    #: ``password``: users sign in (web) or send an API key (``/v1``).
    mode: str = "none"
    #: Host names (``Host`` header) the server answers to besides IP addresses and names
    #: without a dot: the public name behind a reverse proxy. Guards against DNS rebinding.
    allowed_hosts: tuple[str, ...] = ()
    login_lifetime_s: float = 12 * 3600.0

    @property
    def required(self) -> bool:
        return self.mode == "password"


def parse_auth_options(raw: Mapping[str, Any], source: str | None = None) -> AuthOptions:
    """Read this package's keys of ``[server]``; other keys are left to their owners."""
    defaults = AuthOptions()
    mode = raw.get("auth", defaults.mode)
    if mode not in AUTH_MODES:
        raise ConfigError("server.auth", f"must be one of {', '.join(repr(m) for m in AUTH_MODES)}", source=source)
    hosts = raw.get("allowed_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ConfigError("server.allowed_hosts", "must be a list of host names, such as ['tutor.example.edu']",
                          source=source)
    hosts = [h.strip().lower() for h in hosts]
    bad = next((h for h in hosts if len(h) > 253 or any(c in h for c in "/@: ")), None)
    if bad is not None:
        raise ConfigError("server.allowed_hosts",
                          f"'{bad[:80]}' is not a host name (write the name only: no scheme, port or path)",
                          source=source)
    try:
        lifetime = parse_duration(raw.get("login_lifetime", defaults.login_lifetime_s))
    except ValueError as exc:
        raise ConfigError("server.login_lifetime", str(exc), source=source) from None
    if lifetime < 60:
        raise ConfigError("server.login_lifetime", "must be at least one minute", source=source)
    return AuthOptions(mode=mode, allowed_hosts=tuple(hosts), login_lifetime_s=lifetime)
