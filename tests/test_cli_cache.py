"""``mimir cache`` and ``mimir cache prune`` as a user runs them: real processes, real trees."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest
from cache_trees import ALPHA_OLD, BETA, build_cache, regular_files, write_config


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mimir.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=timeout,
    )


@pytest.fixture
def tree(tmp_path: Path):
    return build_cache(tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "mimir.toml",
        {
            "alpha": {"repo": "org/alpha"},
            "beta": {"repo": "org/beta", "revision": BETA},
            "absent": {"repo": "org/absent"},
        },
        {"response": "alpha", "thinking": "beta", "routing": "alpha", "tool_decision": "absent"},
    )


def test_cache_table_shows_references_totals_and_warnings(tree, config):
    out = run("--config", str(config), "cache", "--cache-dir", str(tree.root))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert "alpha (thinking" not in text  # beta serves thinking, not alpha
    assert "alpha (routing, response)@" in lines["model/org/alpha"]
    assert "beta (thinking)@cccccccc" in lines["model/org/beta"]
    for repo in ("model/org/gamma", "dataset/org/data", "model/org/linked"):
        assert "unreferenced" in lines[repo]
    assert "5 repo(s)" in text and "2 referenced" in text and "3 unreferenced" in text
    assert "absent" in text and "not in the cache" in text
    for kind in ("corrupted_repo", "incomplete", "outside_symlink", "dangling_symlink", "broken_ref"):
        assert kind in text
    assert "mimir cache prune --unreferenced" in text


def test_cache_json_sorted_by_name(tree, config):
    out = run("--config", str(config), "cache", "--cache-dir", str(tree.root), "--json", "--sort", "name")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    ids = [r["cache_id"] for r in data["repos"]]
    assert ids == sorted(ids, key=str.lower)
    referenced = {r["repo_id"]: r["referenced"] for r in data["repos"]}
    assert referenced == {"org/alpha": True, "org/beta": True, "org/gamma": False, "org/data": False, "org/linked": False}
    assert [m["model_id"] for m in data["missing"]] == ["absent"]


def test_cache_json_sorted_by_last_access(tree):
    for repo_id, atime in (("org/alpha", 1_000_000), ("org/beta", 3_000_000), ("org/gamma", 2_000_000)):
        for blob in (tree.repo(repo_id) / "blobs").iterdir():
            os.utime(blob, (atime, blob.stat().st_mtime))
    out = run("cache", "--cache-dir", str(tree.root), "--json", "--sort", "accessed")
    ids = [r["repo_id"] for r in json.loads(out.stdout)["repos"]]
    # data and linked were written just now; then beta, gamma, alpha by their access times
    assert ids[-3:] == ["org/beta", "org/gamma", "org/alpha"]


def test_cache_json_sorted_by_size_by_default(tree):
    out = run("cache", "--cache-dir", str(tree.root), "--json")
    sizes = [r["size_on_disk_bytes"] for r in json.loads(out.stdout)["repos"]]
    assert sizes == sorted(sizes, reverse=True)


def test_cache_uses_hf_hub_cache_by_default(tree):
    env_out = subprocess.run(
        [sys.executable, "-m", "mimir.cli.main", "cache", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_CACHE": str(tree.root)},
        timeout=60,
    )
    assert json.loads(env_out.stdout)["cache_dir"] == str(tree.root.resolve())


def test_prune_is_a_dry_run_by_default_then_frees_what_it_promised(tree, config):
    before = regular_files(tree.root.parent)
    dry = run("--config", str(config), "cache", "prune", "--unreferenced", "--cache-dir", str(tree.root), "--json")
    assert dry.returncode == 0, dry.stderr
    dry_data = json.loads(dry.stdout)
    assert dry_data["executed"] is False
    assert regular_files(tree.root.parent) == before
    promised = dry_data["plan"]["expected_freed_bytes"]
    assert {r["repo_id"] for r in dry_data["plan"]["repos"]} == {"org/gamma", "org/data"}

    text = run("--config", str(config), "cache", "prune", "--unreferenced", "--cache-dir", str(tree.root))
    assert "Would free" in text.stdout and "Dry run: nothing was deleted" in text.stdout
    assert "refused" in text.stdout and str(tree.outside_file.resolve()) in text.stdout.replace("\n", "")

    done = run("--config", str(config), "cache", "prune", "--unreferenced", "--yes", "--cache-dir", str(tree.root))
    assert done.returncode == 0, done.stderr
    freed_on_disk = sum(size for path, size in before.items() if not path.exists())
    assert f"({promised} bytes; planned {promised} bytes)" in done.stdout
    assert freed_on_disk == promised
    assert not tree.repo("org/gamma").exists() and tree.repo("org/alpha").exists()


def test_prune_old_revisions_via_group_cache_dir(tree, config):
    out = run("--config", str(config), "cache", "--cache-dir", str(tree.root), "prune", "--old-revisions", "--yes")
    assert out.returncode == 0, out.stderr
    assert not (tree.repo("org/alpha") / "snapshots" / ALPHA_OLD).exists()
    assert tree.repo("org/gamma").exists()


def test_prune_flag_errors_exit_2(tree):
    out = run("cache", "prune", "--cache-dir", str(tree.root))
    assert out.returncode == 2 and "--unreferenced" in out.stderr
    out = run("cache", "prune", "--unreferenced", "--dry-run", "--yes", "--cache-dir", str(tree.root))
    assert out.returncode == 2 and "contradict" in out.stderr


def _prune_in_terminal(cache_dir: Path, answer: bytes) -> str:
    """Run prune with a pseudo-terminal as stdin, answer the prompt, return all output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimir.cli.main", "cache", "prune", "--unreferenced", "--cache-dir", str(cache_dir)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "200"},
    )
    os.close(slave)
    output = b""
    answered = False
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            raise AssertionError(f"no output from prune; got so far: {output!r}")
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"[y/N]" in output:
            os.write(master, answer)
            answered = True
    proc.wait(timeout=60)
    os.close(master)
    assert answered, output
    return output.decode(errors="replace")


def test_prune_asks_in_a_terminal_and_no_keeps_everything(tree):
    before = regular_files(tree.root.parent)
    output = _prune_in_terminal(tree.root, b"n\n")
    assert "Delete these and free" in output
    assert regular_files(tree.root.parent) == before


def test_prune_asks_in_a_terminal_and_yes_deletes(tree):
    output = _prune_in_terminal(tree.root, b"y\n")
    assert "Freed" in output
    # no configuration: the default config uses none of these repos
    assert not tree.repo("org/alpha").exists() and not tree.repo("org/gamma").exists()
    assert tree.repo("org/linked").exists() and tree.outside_file.exists()
