"""State shared by CLI commands: the config path, verbosity and the lazily built app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from mimir.app import MimirApp, configure_logging


@dataclass
class CliState:
    config: Path | None = None
    verbose: bool = False
    _app: MimirApp | None = field(default=None, repr=False)

    def app(self) -> MimirApp:
        if self._app is None:
            self._app = MimirApp.from_config(self.config)
            configure_logging("INFO" if self.verbose else self._app.settings.log_level)
        return self._app


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if obj is None:  # commands invoked without the root callback (tests)
        obj = CliState()
        ctx.find_root().obj = obj
    return obj
