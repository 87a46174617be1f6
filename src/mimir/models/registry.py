"""Backends register through one door, built-ins included.

Third-party packages can add a backend by exposing an entry point in the
``mimir.backends`` group whose object is a zero-argument callable returning a
:class:`~mimir.models.base.Backend`. Built-in backends are registered the same way, from
:func:`default_registry`, and are imported only when first asked for, so ``import mimir``
stays light.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import entry_points

from mimir.errors import UnknownBackendError
from mimir.models.base import Backend

BackendFactory = Callable[[], Backend]


class BackendRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, BackendFactory] = {}
        self._instances: dict[str, Backend] = {}
        self._lock = threading.Lock()  # protects _instances

    def register(self, name: str, factory: BackendFactory) -> None:
        self._factories[name] = factory
        self._instances.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Backend:
        with self._lock:
            if name in self._instances:
                return self._instances[name]
            if name not in self._factories:
                raise UnknownBackendError(name, self._factories)
            backend = self._factories[name]()
            self._instances[name] = backend
            return backend


def _llama_cpp() -> Backend:
    from mimir.models.llama_server import LlamaServerBackend

    return LlamaServerBackend()


def _transformers() -> Backend:
    from mimir.models.transformers_backend import TransformersBackend

    return TransformersBackend()


def _remote() -> Backend:
    from mimir.models.remote import RemoteBackend

    return RemoteBackend()


def _scripted() -> Backend:
    from mimir.models.scripted import ScriptedBackend

    return ScriptedBackend()


BUILTIN_BACKENDS: dict[str, BackendFactory] = {
    "llama_cpp": _llama_cpp,
    "transformers": _transformers,
    "openai": _remote,
    "scripted": _scripted,
}


def default_registry() -> BackendRegistry:
    registry = BackendRegistry()
    for name, factory in BUILTIN_BACKENDS.items():
        registry.register(name, factory)
    for ep in entry_points(group="mimir.backends"):
        registry.register(ep.name, ep.load())
    return registry
