"""The application object the edges (CLI, web UI, HTTP API) share.

``MimirApp`` reads the settings once per process start and builds the long-lived parts
lazily: the model manager now; telemetry, storage and the tutor hang off it as they are
needed. Edges call it; it never calls the edges.
"""

from __future__ import annotations

import logging
import os
import threading
from functools import cached_property

from mimir.config import Settings, load_settings
from mimir.runtime.manager import ModelManager


class MimirApp:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: str | os.PathLike | None = None) -> MimirApp:
        return cls(load_settings(config))

    @cached_property
    def manager(self) -> ModelManager:
        return ModelManager.from_settings(self.settings)

    def close(self) -> None:
        if "manager" in self.__dict__:
            self.manager.close()

    def __enter__(self) -> MimirApp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
