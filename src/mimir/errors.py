"""One exception hierarchy for Mimir.

Every error a user can cause or meet is a :class:`MimirError` subclass that carries the data
needed to explain it (model id, file, budget, key...). Errors never log when constructed: the
edges (CLI, HTTP API, web UI) translate them through one table each into an exit code, an HTTP
status or a message on the page.
"""

from __future__ import annotations

from collections.abc import Iterable


def _fmt_bytes(n: int | float | None) -> str:
    from mimir.units import format_bytes

    return format_bytes(n)


class MimirError(Exception):
    """Base class. ``exit_code`` and ``http_status`` are the defaults used by the edges.

    The text never carries credentials: ``https://user:secret@host`` reads as
    ``https://***@host`` wherever the error is shown, logged or stored.
    """

    exit_code: int = 1
    http_status: int = 500
    kind: str = "mimir_error"

    def __str__(self) -> str:
        from mimir.redact import redact_secrets

        return redact_secrets(super().__str__())


class ConfigError(MimirError):
    """The configuration file or an environment variable is invalid."""

    exit_code = 2
    http_status = 500
    kind = "config_error"

    def __init__(self, key: str, problem: str, *, source: str | None = None):
        self.key = key
        self.problem = problem
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"config key '{key}'{where}: {problem}")


class UnknownModelError(MimirError):
    exit_code = 2
    http_status = 404
    kind = "model_not_found"

    def __init__(self, model_id: str, valid: Iterable[str]):
        self.model_id = model_id
        self.valid = sorted(valid)
        super().__init__(
            f"unknown model id '{model_id}'; configured models: {', '.join(self.valid) or '(none)'}"
        )


class UnknownRoleError(MimirError):
    exit_code = 2
    http_status = 400
    kind = "invalid_request_error"

    def __init__(self, role: str, valid: Iterable[str]):
        self.role = role
        self.valid = sorted(valid)
        super().__init__(f"unknown agent role '{role}'; valid roles: {', '.join(self.valid)}")


class UnknownBackendError(MimirError):
    exit_code = 2
    kind = "config_error"

    def __init__(self, backend: str, valid: Iterable[str]):
        self.backend = backend
        self.valid = sorted(valid)
        super().__init__(
            f"unknown backend '{backend}'; registered backends: {', '.join(self.valid)}"
        )


class MissingExtraError(MimirError):
    """An optional dependency is needed; names the extra that installs it."""

    exit_code = 3
    kind = "missing_dependency"

    def __init__(self, module: str, extra: str, purpose: str):
        self.module = module
        self.extra = extra
        self.purpose = purpose
        super().__init__(
            f"{purpose} needs the '{module}' package: pip install 'mimir-tutor[{extra}]'"
        )


class ModelLoadError(MimirError):
    """A model failed to load. No other model is substituted."""

    exit_code = 4
    http_status = 503
    kind = "model_load_error"

    def __init__(self, model_id: str, source: str, cause: str):
        self.model_id = model_id
        self.source = source
        self.cause = cause
        super().__init__(f"model '{model_id}' failed to load from {source}: {cause}")


class BudgetExceededError(MimirError):
    """A model cannot be made to fit the memory budget."""

    exit_code = 5
    http_status = 507
    kind = "memory_budget_exceeded"

    def __init__(
        self,
        model_id: str,
        estimate_bytes: int,
        budget_bytes: int,
        *,
        device: str = "ram",
        blocked_by: Iterable[str] = (),
        detail: str = "",
    ):
        self.model_id = model_id
        self.estimate_bytes = estimate_bytes
        self.budget_bytes = budget_bytes
        self.device = device
        self.blocked_by = sorted(blocked_by)
        self.detail = detail
        if self.blocked_by:
            why = (
                f"the models in use or pinned ({', '.join(self.blocked_by)}) leave too little room "
                f"in the {_fmt_bytes(budget_bytes)} {device} budget"
            )
            if detail:
                why += f"; {detail}"
        else:
            why = f"it does not fit the {_fmt_bytes(budget_bytes)} {device} budget even alone"
        super().__init__(
            f"model '{model_id}' needs an estimated {_fmt_bytes(estimate_bytes)} of {device}; {why}"
        )


class ContextOverflowError(MimirError):
    exit_code = 6
    http_status = 400
    kind = "context_length_exceeded"

    def __init__(self, model_id: str, needed_tokens: int, context_length: int):
        self.model_id = model_id
        self.needed_tokens = needed_tokens
        self.context_length = context_length
        super().__init__(
            f"input needs {needed_tokens} tokens but model '{model_id}' has a "
            f"{context_length}-token context window"
        )


class GenerationError(MimirError):
    exit_code = 7
    http_status = 502
    kind = "generation_error"

    def __init__(self, model_id: str, cause: str):
        self.model_id = model_id
        self.cause = cause
        super().__init__(f"model '{model_id}' failed while generating: {cause}")


class InvalidInputError(MimirError):
    """Bad user input (empty message, unknown session...)."""

    exit_code = 2
    http_status = 400
    kind = "invalid_request_error"


class NotFoundError(MimirError):
    exit_code = 2
    http_status = 404
    kind = "not_found"


class StorageError(MimirError):
    exit_code = 8
    http_status = 500
    kind = "storage_error"

    def __init__(self, path: str, cause: str):
        self.path = path
        self.cause = cause
        super().__init__(f"cannot use database {path}: {cause}")


class UnsafePathError(MimirError):
    """A deletion or write would leave the directory it is confined to."""

    exit_code = 9
    http_status = 400
    kind = "unsafe_path"

    def __init__(self, path: str, root: str):
        self.path = path
        self.root = root
        super().__init__(f"refusing to touch {path}: it is outside {root}")


class UnknownPromptError(MimirError):
    """A prompt segment or decision prompt name that the prompt library does not have."""

    exit_code = 2
    http_status = 400
    kind = "invalid_request_error"

    def __init__(self, name: str, valid: Iterable[str], *, what: str = "prompt segment"):
        self.name = name
        self.what = what
        self.valid = sorted(valid)
        super().__init__(f"unknown {what} '{name}'; valid names: {', '.join(self.valid)}")


class PromptFormatError(MimirError):
    """A prompt file (shipped or from the user's prompt folder) cannot be used."""

    exit_code = 2
    kind = "config_error"

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"prompt file {source}: {problem}")


class EvalCaseError(InvalidInputError):
    """A line of an evaluation cases file is not a valid case."""

    def __init__(self, path: str, line: int, problem: str):
        self.path = path
        self.line = line
        self.problem = problem
        super().__init__(f"{path}:{line}: {problem}")


class CacheCleanupError(MimirError):
    """Some paths of an executed cache cleanup could not be deleted (the rest was)."""

    exit_code = 1
    http_status = 500
    kind = "cache_cleanup_error"

    def __init__(self, failed: Iterable[str], freed_bytes: int):
        self.failed = list(failed)
        self.freed_bytes = freed_bytes
        super().__init__(
            f"{len(self.failed)} path(s) could not be deleted (first: {self.failed[0] if self.failed else '-'}); "
            f"freed {_fmt_bytes(freed_bytes)}"
        )


class DeviceOutOfMemoryError(MimirError):
    """A device ran out of memory while loading or running a model (CUDA OOM, MemoryError).

    The manager answers one during a load by evicting idle models and retrying once; a
    caller that meets one while generating can do the same with ``manager.evict_idle()``.
    """

    exit_code = 5
    http_status = 507
    kind = "device_out_of_memory"

    def __init__(self, model_id: str, device: str, phase: str, cause: str):
        self.model_id = model_id
        self.device = device
        self.phase = phase
        self.cause = cause
        super().__init__(f"model '{model_id}' ran out of {device} memory during {phase}: {cause}")


class AuthenticationError(MimirError):
    """Missing or wrong credentials. Never says which part was wrong."""

    exit_code = 2
    http_status = 401
    kind = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(MimirError):
    """The signed-in user's role does not allow this action."""

    exit_code = 2
    http_status = 403
    kind = "permission_denied"

    def __init__(self, action: str, role: str, needed: str):
        self.action = action
        self.role = role
        self.needed = needed
        super().__init__(f"{action} needs the {needed} role; you are signed in as a {role}")


class TooManyAttemptsError(MimirError):
    """Login throttled after repeated failures from one address or for one user."""

    exit_code = 2
    http_status = 429
    kind = "rate_limit_exceeded"

    def __init__(self, retry_after_s: float):
        self.retry_after_s = max(1, int(retry_after_s + 0.999))
        super().__init__(f"too many failed sign-ins; try again in {self.retry_after_s} s")


class RequestLimitError(InvalidInputError):
    """A request over one of the server's limits (``[server]``), or not valid at all.
    ``param`` names the field, as OpenAI's error body does."""

    def __init__(self, message: str, *, param: str | None = None, http_status: int = 400):
        self.param = param
        self.http_status = http_status
        super().__init__(message)


class ServerBusyError(MimirError):
    """The server will not take this turn now: the user already has as many turns running as
    allowed (429), or the queue is full (503). ``retry_after_s`` is the advice sent back."""

    exit_code = 10
    kind = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, http_status: int = 429):
        self.retry_after_s = retry_after_s
        self.http_status = http_status
        if http_status == 503:
            self.kind = "server_overloaded"
        super().__init__(message)


class TurnTimeoutError(MimirError):
    """A turn ran past ``[server] turn_timeout`` (or a remote model past its deadline)."""

    exit_code = 10
    http_status = 504
    kind = "timeout"

    def __init__(self, what: str, timeout_s: float):
        self.what = what
        self.timeout_s = timeout_s
        super().__init__(f"{what} took longer than {timeout_s:g} s and was stopped")


class TurnCancelledError(MimirError):
    """The client went away (closed the stream or the page): the turn stopped early."""

    exit_code = 130
    http_status = 499
    kind = "cancelled"

    def __init__(self, reason: str = "the client disconnected"):
        self.reason = reason
        super().__init__(f"the turn was stopped: {reason}")


class HubError(MimirError):
    """The Hugging Face Hub could not give what was asked (a missing repo, revision or file,
    no network), or a download did not match its checksum."""

    exit_code = 11
    http_status = 502
    kind = "hub_error"
