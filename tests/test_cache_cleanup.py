"""plan_cleanup / CleanupPlan.execute on real cache trees: exactly what goes, what stays."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cache_trees import (
    ALPHA_NEW,
    ALPHA_OLD,
    ALPHA_OLD_WEIGHTS,
    BETA,
    GAMMA_NEW,
    GAMMA_OLD,
    GAMMA_OLD_WEIGHTS,
    INCOMPLETE,
    OUTSIDE,
    TOKENIZER,
    all_entries,
    build_cache,
    commit,
    regular_files,
)

from mimir.cache import plan_cleanup, scan_cache
from mimir.cache.layout import repo_folder, write_revision
from mimir.config import settings_from_dict
from mimir.errors import InvalidInputError


def _settings(models: dict):
    return settings_from_dict({"models": models}, env={})


def _blob(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def tree(tmp_path: Path):
    return build_cache(tmp_path)


@pytest.fixture
def settings():
    return _settings({"alpha": {"repo": "org/alpha"}, "beta": {"repo": "org/beta", "revision": BETA}})


def _run(tree, settings, **options):
    """Plan and execute; return (plan, result, removed regular files with sizes)."""
    before = regular_files(tree.root.parent)
    plan = plan_cleanup(scan_cache(tree.root, settings), **options)
    result = plan.execute()
    after = regular_files(tree.root.parent)
    removed = {p: s for p, s in before.items() if p not in after}
    return plan, result, removed


def test_unreferenced_removes_exactly_the_unused_repos(tree, settings):
    entries_before = all_entries(tree.root)
    plan, result, removed = _run(tree, settings, unreferenced=True)

    assert {(r.repo_type, r.repo_id) for r in plan.repos} == {("model", "org/gamma"), ("dataset", "org/data")}
    assert plan.revisions == () and plan.files == ()
    # org/linked is unreferenced but links outside the cache: refused, reported, untouched
    assert [(s.path.name, s.target) for s in plan.refused] == [("weights.bin", str(tree.outside_file.resolve()))]

    gone = {Path(p) for p in ("models--org--gamma", "datasets--org--data")}
    survivors = {e for e in entries_before if e.parts[0] not in {str(g) for g in gone}}
    assert all_entries(tree.root) == survivors
    assert tree.outside_file.read_bytes() == OUTSIDE and tree.outside_link.is_symlink()

    # the dry run promised exactly what was freed, and that is what left the disk
    assert result.freed_bytes == plan.expected_freed_bytes == sum(removed.values())
    assert result.ok and result.failed == ()
    assert set(result.deleted) >= {tree.repo("org/gamma").resolve(), tree.repo("org/data", "dataset").resolve()}


def test_old_revisions_keep_refs_pins_and_shared_blobs(tree, settings):
    plan, result, removed = _run(tree, settings, old_revisions=True)

    assert {(r.repo_id, r.commit_hash) for r in plan.revisions} == {("org/alpha", ALPHA_OLD), ("org/gamma", GAMMA_OLD)}
    alpha = tree.repo("org/alpha")
    gamma = tree.repo("org/gamma")
    assert not (alpha / "snapshots" / ALPHA_OLD).exists()
    assert not (alpha / "blobs" / _blob(ALPHA_OLD_WEIGHTS)).exists()
    # shared with the kept revision
    assert (alpha / "blobs" / _blob(TOKENIZER)).is_file()
    assert (alpha / "snapshots" / ALPHA_NEW / "tokenizer.json").read_bytes() == TOKENIZER
    assert (alpha / "refs" / "main").read_text() == ALPHA_NEW
    assert not (gamma / "snapshots" / GAMMA_OLD).exists()
    assert (gamma / "snapshots" / GAMMA_NEW / "w.bin").is_file()
    assert tree.incomplete.exists()  # not asked for
    assert {p.name for p in removed} == {_blob(ALPHA_OLD_WEIGHTS), _blob(GAMMA_OLD_WEIGHTS)}
    assert result.freed_bytes == plan.expected_freed_bytes == len(ALPHA_OLD_WEIGHTS) + len(GAMMA_OLD_WEIGHTS)


def test_a_pinned_revision_is_always_kept(tree):
    settings = _settings({"old": {"repo": "org/alpha", "revision": ALPHA_OLD}})
    plan, _result, _removed = _run(tree, settings, old_revisions=True, unreferenced=True)
    assert "org/alpha" not in {r.repo_id for r in plan.repos}
    assert ALPHA_OLD not in {r.commit_hash for r in plan.revisions}
    assert (tree.repo("org/alpha") / "snapshots" / ALPHA_OLD / "model.safetensors").read_bytes() == ALPHA_OLD_WEIGHTS


def test_a_repo_without_refs_or_pins_keeps_its_newest_revision(tmp_path):
    root = tmp_path / "hub"
    first = write_revision(root, "org/detached", commit("1"), {"w": b"1" * 10})
    second = write_revision(root, "org/detached", commit("2"), {"w": b"2" * 20})
    os.utime(first / "w", (1_000_000, 1_000_000), follow_symlinks=True)
    plan = plan_cleanup(scan_cache(root), old_revisions=True)
    assert [r.commit_hash for r in plan.revisions] == [commit("1")]
    plan.execute()
    assert not first.exists() and (second / "w").read_bytes() == b"2" * 20


def test_incomplete_removes_only_partial_downloads(tree, settings):
    plan, result, removed = _run(tree, settings, incomplete=True)
    assert [f.path.name for f in plan.files] == [tree.incomplete.name]
    assert list(removed) == [tree.incomplete.resolve()]
    assert result.freed_bytes == plan.expected_freed_bytes == len(INCOMPLETE)


def test_an_incomplete_file_under_a_download_lock_is_kept(tree, settings):
    from filelock import FileLock

    lock_path = tree.root / ".locks" / "models--org--gamma" / "0123abcd.lock"
    lock_path.parent.mkdir(parents=True)
    with FileLock(str(lock_path)):
        plan = plan_cleanup(scan_cache(tree.root, settings), incomplete=True)
        assert plan.files == ()
        assert [s.reason for s in plan.refused] == ["a download is writing it now"]
    assert tree.incomplete.exists()
    # once the download lock is free, the partial file can go
    plan = plan_cleanup(scan_cache(tree.root, settings), incomplete=True)
    assert plan.execute().freed_bytes == len(INCOMPLETE) and not tree.incomplete.exists()


def test_all_options_together_free_what_was_promised(tree, settings):
    plan, result, removed = _run(tree, settings, unreferenced=True, old_revisions=True, incomplete=True)
    # gamma goes whole, so its old revision and its partial file are not listed twice
    assert {r.repo_id for r in plan.revisions} == {"org/alpha"}
    assert plan.files == ()
    assert result.freed_bytes == plan.expected_freed_bytes == sum(removed.values())
    assert tree.outside_file.exists()
    # corrupted repos are reported, never pruned by these options
    for repo_id in ("org/broken", "org/dangling", "org/badref"):
        assert tree.repo(repo_id).is_dir()


def test_plan_needs_an_option(tree):
    with pytest.raises(InvalidInputError, match="nothing to prune"):
        plan_cleanup(scan_cache(tree.root))


def test_executing_twice_frees_nothing_more(tree, settings):
    plan = plan_cleanup(scan_cache(tree.root, settings), unreferenced=True, old_revisions=True)
    first = plan.execute()
    second = plan.execute()
    assert first.freed_bytes > 0
    assert second.freed_bytes == 0 and second.failed == ()


def test_blob_linked_by_a_snapshot_added_after_planning_is_kept(tree, settings):
    plan = plan_cleanup(scan_cache(tree.root, settings), old_revisions=True)
    # a new download reuses the old weights after the plan was made
    write_revision(tree.root, "org/alpha", commit("7"), {"model.safetensors": ALPHA_OLD_WEIGHTS}, refs=["v-new"])
    result = plan.execute()
    blob = tree.repo("org/alpha") / "blobs" / _blob(ALPHA_OLD_WEIGHTS)
    assert blob.is_file()
    assert (tree.repo("org/alpha") / "snapshots" / commit("7") / "model.safetensors").read_bytes() == ALPHA_OLD_WEIGHTS
    assert [(k.path.name, k.reason) for k in result.kept] == [(blob.name, "still linked by a remaining snapshot")]


def test_link_out_of_the_cache_added_after_planning_is_refused(tree, settings):
    plan = plan_cleanup(scan_cache(tree.root, settings), unreferenced=True)
    assert "org/gamma" in {r.repo_id for r in plan.repos}
    sneaky = tree.repo("org/gamma") / "snapshots" / GAMMA_NEW / "extra.bin"
    sneaky.symlink_to(tree.outside_file)
    result = plan.execute()
    assert tree.repo("org/gamma").is_dir() and sneaky.is_symlink()
    assert tree.outside_file.read_bytes() == OUTSIDE
    assert any(s.path == tree.repo("org/gamma").resolve() and "outside" in s.reason for s in result.refused)
    assert not result.ok


def test_a_repo_folder_that_is_a_link_out_of_the_cache_is_refused(tmp_path):
    root = tmp_path / "hub"
    elsewhere = tmp_path / "elsewhere"
    write_revision(elsewhere, "org/far", commit("1"), {"w": b"f" * 64}, refs=["main"])
    root.mkdir()
    (root / "models--org--far").symlink_to(elsewhere / "models--org--far")
    report = scan_cache(root)
    assert [w.kind for w in report.warnings] == ["outside_symlink"]
    plan = plan_cleanup(report, unreferenced=True, old_revisions=True)
    assert plan.repos == () and plan.expected_freed_bytes == 0
    assert "link" in plan.refused[0].reason
    plan.execute()
    assert (elsewhere / "models--org--far" / "blobs" / _blob(b"f" * 64)).is_file()


def test_cache_root_reached_through_a_link(tmp_path, settings):
    real = build_cache(tmp_path / "real")
    link = tmp_path / "hub-link"
    link.symlink_to(real.root)
    plan = plan_cleanup(scan_cache(link, settings), unreferenced=True)
    assert {r.repo_id for r in plan.repos} == {"org/gamma", "org/data"}
    result = plan.execute()
    assert result.freed_bytes == plan.expected_freed_bytes and result.failed == ()
    assert not real.repo("org/gamma").exists() and real.repo("org/alpha").exists()


def _share(root: Path, repo_id: str, content: bytes) -> Path:
    """Move a repo's blob into huggingface_hub's shared store, as an Xet download does."""
    from huggingface_hub.utils import _shared_blobs

    blob = repo_folder(root, repo_id) / "blobs" / _blob(content)
    ok = _shared_blobs.publish_blob_to_shared_store(
        blob_path=str(blob), xet_hash=_blob(content), cache_dir=root, expected_size=len(content)
    )
    assert ok and blob.is_symlink()
    return _shared_blobs.shared_blob_path(root, _blob(content))


def test_shared_store_payload_goes_only_with_its_last_link(tmp_path):
    root = (tmp_path / "hub").resolve()
    payload = b"s" * 4096
    write_revision(root, "org/one", commit("1"), {"w.bin": payload}, refs=["main"])
    write_revision(root, "org/two", commit("2"), {"w.bin": payload}, refs=["main"])
    store_path = _share(root, "org/one", payload)
    assert _share(root, "org/two", payload) == store_path

    keep_two = _settings({"two": {"repo": "org/two"}})
    report = scan_cache(root, keep_two)
    assert report.warnings == ()  # the store folder is not mistaken for a repo
    plan = plan_cleanup(report, unreferenced=True)
    assert [r.repo_id for r in plan.repos] == ["org/one"]
    assert plan.expected_freed_bytes == plan.execute().freed_bytes
    assert store_path.is_file()  # org/two still links to it
    assert (repo_folder(root, "org/two") / "snapshots" / commit("2") / "w.bin").read_bytes() == payload

    plan = plan_cleanup(scan_cache(root), unreferenced=True)
    assert [p.size_bytes for p in plan.shared_payloads] == [len(payload)]
    result = plan.execute()
    assert result.freed_bytes == plan.expected_freed_bytes
    assert not store_path.exists()


def test_plan_lists_every_path_in_deletion_order(tree, settings):
    plan = plan_cleanup(scan_cache(tree.root, settings), unreferenced=True, old_revisions=True)
    paths = plan.paths
    snapshot = tree.repo("org/alpha").resolve() / "snapshots" / ALPHA_OLD
    blob = tree.repo("org/alpha").resolve() / "blobs" / _blob(ALPHA_OLD_WEIGHTS)
    assert paths.index(snapshot) < paths.index(blob)
    assert tree.repo("org/gamma").resolve() in paths
    data = plan.to_dict()
    assert data["expected_freed_bytes"] == plan.expected_freed_bytes
    assert data["revisions"][0]["commit_hash"] == ALPHA_OLD
