"""Repetition controls reach llama.cpp: on the bundled model, a strong repeat penalty changes
what a repetitive prompt produces."""

from __future__ import annotations

from mimir.app import MimirApp
from mimir.config import load_settings, settings_from_dict
from mimir.models.base import ChatMessage, GenerationParams


def test_repeat_penalty_changes_the_bundled_models_output():
    messages = [ChatMessage("user", "Continue this song: la la la la la la la la la la")]
    with MimirApp(load_settings()) as app, app.manager.use("default") as model:
        plain = model.chat(messages, GenerationParams(max_tokens=32, temperature=0.0, seed=1)).text
        penalised = model.chat(messages, GenerationParams(max_tokens=32, temperature=0.0, seed=1, repeat_penalty=1.8,
                                                          frequency_penalty=1.0)).text
    words = lambda text: text.lower().split()  # noqa: E731
    assert words(penalised).count("la") < words(plain).count("la") / 2


def test_tutor_penalties_are_configurable_and_checked():
    settings = settings_from_dict({"tutor": {"repeat_penalty": 1.2, "presence_penalty": 0.1}})
    assert settings.tutor.repeat_penalty == 1.2 and settings.tutor.presence_penalty == 0.1
    assert settings_from_dict({}).tutor.repeat_penalty == 1.1
    import pytest

    from mimir.errors import ConfigError

    with pytest.raises(ConfigError, match="repeat_penalty"):
        settings_from_dict({"tutor": {"repeat_penalty": "high"}})
