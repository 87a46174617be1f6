"""The ``[server]`` keys the ops package (:mod:`mimir.ops`: metrics and health) owns; other
keys of the table belong to other parts. It sits below :mod:`mimir.config`, apart from the
package it configures, so that loading the settings checks these keys without importing the
server's parts (``docs/architecture.md``)::

    [server]
    metrics = true                          # serve GET /metrics (Prometheus text format)
    metrics_token_env = "MIMIR_METRICS_TOKEN"   # env var holding a bearer token for /metrics
    ready_timeout = "10s"                   # deadline of /readyz's 1-token generation
    ready_cache = "5s"                      # how long a /readyz result is reused

The token itself never goes in the file: the file names the environment variable that holds
it. When that variable is set (non-empty), ``/metrics`` needs ``Authorization: Bearer TOKEN``
(or an admin, when authentication is on).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mimir.errors import ConfigError
from mimir.units import parse_duration

DEFAULT_TOKEN_ENV = "MIMIR_METRICS_TOKEN"


@dataclass(frozen=True)
class OpsOptions:
    metrics: bool = True
    metrics_token_env: str = DEFAULT_TOKEN_ENV
    ready_timeout_s: float = 10.0
    ready_cache_s: float = 5.0

    def metrics_token(self, env: Mapping[str, str] | None = None) -> str | None:
        """The bearer token /metrics accepts, or None when none is configured."""
        value = (os.environ if env is None else env).get(self.metrics_token_env, "")
        return value or None


def parse_ops_options(raw: Mapping[str, Any], source: str | None = None) -> OpsOptions:
    """Read this package's keys of ``[server]``; other keys are left to their owners."""
    defaults = OpsOptions()
    metrics = raw.get("metrics", defaults.metrics)
    if not isinstance(metrics, bool):
        raise ConfigError("server.metrics", "must be true or false", source=source)
    token_env = raw.get("metrics_token_env", defaults.metrics_token_env)
    if not isinstance(token_env, str) or not token_env.strip():
        raise ConfigError("server.metrics_token_env", "must name an environment variable", source=source)

    def _duration(key: str, default: float, minimum: float) -> float:
        try:
            value = parse_duration(raw.get(key, default))
        except ValueError as exc:
            raise ConfigError(f"server.{key}", str(exc), source=source) from None
        if value < minimum:
            raise ConfigError(f"server.{key}", f"must be at least {minimum:g}s", source=source)
        return value

    return OpsOptions(
        metrics=metrics,
        metrics_token_env=token_env.strip(),
        ready_timeout_s=_duration("ready_timeout", defaults.ready_timeout_s, 0.1),
        ready_cache_s=_duration("ready_cache", defaults.ready_cache_s, 0.0),
    )
