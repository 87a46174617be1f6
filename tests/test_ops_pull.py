"""``mimir pull`` and ``mimir models catalog`` against a local Hub-compatible server
(tests/hub_server.py, on 127.0.0.1, selected with HF_ENDPOINT): the real CLI in a subprocess,
the real huggingface_hub client, the bundled GGUF model as the repo's file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("tomlkit")
from hub_server import HubServer  # noqa: E402

REPO = "mimir-test/SmolLM2-135M-Instruct-GGUF"
FILE = "smollm2-135m-instruct-q4_1.gguf"


@pytest.fixture(scope="module")
def gguf_bytes(bundled_gguf) -> bytes:
    return bundled_gguf.read_bytes()


@pytest.fixture
def hub(gguf_bytes):
    with HubServer() as hub:
        hub.add(REPO, {FILE: gguf_bytes, "README.md": b"# a test repo\n", "config.json": b"{}"})
        yield hub


def mimir(*args: str, hub=None, offline: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    env["MIMIR_BUDGET"] = "4GiB"
    return subprocess.run([sys.executable, "-m", "mimir.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def blob_dir() -> Path:
    return Path(os.environ["HF_HUB_CACHE"]) / ("models--" + REPO.replace("/", "--")) / "blobs"


CONFIG = """# my tutor's settings
[budget]
memory = "4GiB"   # keep it small

[tutor]
thinking = false  # faster answers
"""


def test_pull_downloads_checks_estimates_and_writes_a_config_that_loads(hub, gguf_bytes, tmp_path):
    config = tmp_path / "mimir.toml"
    config.write_text(CONFIG)
    out = mimir("--config", str(config), "pull", REPO, "--as", "small", "--role", "response", "--role", "thinking",
                "--json", hub=hub)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["files"] == [{"path": FILE, "size_bytes": len(gguf_bytes),
                                "sha256": hashlib.sha256(gguf_bytes).hexdigest()}]
    assert result["downloaded"] == [FILE]
    assert result["fits"] is True and result["estimate_bytes"] > len(gguf_bytes)
    assert result["config_written"] == str(config)
    blob = blob_dir() / hashlib.sha256(gguf_bytes).hexdigest()
    assert blob.read_bytes() == gguf_bytes
    assert hub.downloads(FILE) == [None]  # one whole-file GET; README/config.json not fetched

    text = config.read_text()
    assert "# my tutor's settings" in text and "# keep it small" in text and "# faster answers" in text
    import tomllib

    data = tomllib.loads(text)
    assert data["models"]["small"] == {"backend": "llama_cpp", "repo": REPO, "file": FILE, "revision": "main",
                                       "context_length": 2048}
    assert data["models"]["default"]["package"].endswith(".gguf")  # the implicit bundled model stays
    assert data["roles"] == {"response": "small", "thinking": "small"}
    # The file loads, and the model resolves from the cache with the Hub offline.
    models = mimir("--config", str(config), "models", "--json", offline=True)
    assert models.returncode == 0, models.stderr
    rows = {r["id"]: r for r in json.loads(models.stdout)["models"]}
    assert rows["small"]["error"] is None and rows["small"]["estimate_bytes"] == result["estimate_bytes"]
    assert rows["small"]["roles"] == ["thinking", "response"]

    again = mimir("--config", str(config), "pull", REPO, "--as", "small", "--json", hub=hub)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["downloaded"] == []  # already in the cache: nothing fetched
    assert json.loads(again.stdout)["download_bytes"] == 0
    assert tomllib.loads(config.read_text())["roles"] == {"response": "small", "thinking": "small"}


def test_an_interrupted_transfer_resumes_with_a_range_request(hub, gguf_bytes):
    cut = 25_000_000  # past two of the client's 10 MiB write chunks
    hub.cut_after[FILE] = cut
    out = mimir("pull", REPO, "--json", hub=hub)
    assert out.returncode == 0, out.stderr
    first, second = hub.downloads(FILE)
    assert first is None  # the whole file, cut short by the server
    resumed_at = int(second.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= cut  # the client kept what it had and asked for the rest
    assert (blob_dir() / hashlib.sha256(gguf_bytes).hexdigest()).read_bytes() == gguf_bytes
    assert "not written to a config file" in out.stderr


def test_a_checksum_mismatch_fails_and_leaves_nothing_in_the_cache(hub, tmp_path):
    hub.corrupt.add(FILE)
    config = tmp_path / "mimir.toml"
    out = mimir("--config", str(config), "pull", REPO, hub=hub)
    assert out.returncode == 11
    assert "does not match its checksum" in out.stderr and "Traceback" not in out.stderr
    assert not any(p.is_file() for p in blob_dir().iterdir())
    assert not config.exists()


def test_a_repo_missing_from_the_hub_is_one_line(hub):
    out = mimir("pull", "mimir-test/no-such-repo", hub=hub)
    assert out.returncode == 11
    assert out.stderr.strip().count("\n") == 0
    assert "repo 'mimir-test/no-such-repo' was not found" in out.stderr


def test_dry_run_lists_files_and_downloads_nothing(hub, gguf_bytes):
    out = mimir("pull", REPO, "--dry-run", "--json", hub=hub)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert [f["path"] for f in plan["files"]] == [FILE]
    assert plan["download_bytes"] == len(gguf_bytes)
    assert hub.downloads(FILE) == []
    assert not blob_dir().exists()


def test_a_file_not_in_the_repo_names_the_ones_that_are(hub):
    out = mimir("pull", REPO, "--file", "nope.gguf", hub=hub)
    assert out.returncode == 11
    assert FILE in out.stderr


def test_catalog_takes_exact_sizes_from_the_hub_and_marks_the_rest_approximate(hub):
    from mimir.ops.catalog import load_catalog

    entry = load_catalog()[0]
    hub.add(entry.repo, {entry.file: b"x" * 123_456})
    out = mimir("models", "catalog", "--json", "--context", "4096", hub=hub)
    assert out.returncode == 0, out.stderr
    rows = {r["id"]: r for r in json.loads(out.stdout)["models"]}
    assert rows[entry.id]["size_exact"] is True and rows[entry.id]["file_bytes"] == 123_456
    others = [r for i, r in rows.items() if i != entry.id]
    assert others and all(not r["size_exact"] for r in others)
    assert all(r["context_length"] == 4096 for r in rows.values())
    offline = json.loads(mimir("models", "catalog", "--json", offline=True).stdout)
    assert not any(r["size_exact"] for r in offline["models"])


@pytest.mark.slow
def test_a_transformers_repo_is_pulled_with_its_config_tokenizer_and_weights(tiny_llama_files, tmp_path):
    pytest.importorskip("transformers")
    with HubServer() as hub:
        hub.add("mimir-test/tiny-llama", {**tiny_llama_files, "notes.txt": b"not needed"})
        config = tmp_path / "mimir.toml"
        out = mimir("--config", str(config), "pull", "mimir-test/tiny-llama", "--as", "tiny", "--json", hub=hub)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    paths = {f["path"] for f in result["files"]}
    assert result["kind"] == "transformers"
    assert {"config.json", "model.safetensors"} <= paths and "notes.txt" not in paths
    assert any(p.startswith("tokenizer") for p in paths)
    assert result["estimate_bytes"] > 0
    import tomllib

    entry = tomllib.loads(config.read_text())["models"]["tiny"]
    assert entry["backend"] == "transformers" and entry["repo"] == "mimir-test/tiny-llama" and "file" not in entry
