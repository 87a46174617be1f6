"""scan_cache on real cache trees: sizes, references, missing models and warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cache_trees import (
    ALPHA_NEW,
    ALPHA_NEW_WEIGHTS,
    ALPHA_OLD,
    ALPHA_OLD_WEIGHTS,
    BETA,
    GAMMA_NEW,
    INCOMPLETE,
    MISSING_COMMIT,
    OUTSIDE,
    TOKENIZER,
    build_cache,
)

from mimir.cache import resolve_cache_dir, scan_cache
from mimir.cache.layout import write_revision
from mimir.config import settings_from_dict
from mimir.errors import InvalidInputError


def _settings(models: dict, roles: dict | None = None):
    return settings_from_dict({"models": models, "roles": roles or {}}, env={})


@pytest.fixture
def tree(tmp_path: Path):
    return build_cache(tmp_path)


@pytest.fixture
def settings(tmp_path: Path):
    local = tmp_path / "models" / "local.gguf"
    local.parent.mkdir()
    local.write_bytes(b"L" * 1234)
    return _settings(
        {
            "alpha": {"repo": "org/alpha"},  # revision main -> ALPHA_NEW
            "beta": {"repo": "org/beta", "revision": BETA, "file": "model.Q4.gguf"},
            "absent": {"repo": "org/absent"},
            "badrev": {"repo": "org/alpha", "revision": "v2"},
            "nofile": {"repo": "org/beta", "file": "missing.gguf"},
            "corrupt": {"repo": "org/broken"},
            "local": {"path": str(local)},
            "gone": {"path": str(tmp_path / "models" / "gone.gguf")},
            "remote": {"url": "http://127.0.0.1:9/v1", "backend": "openai"},
        },
        {"response": "alpha", "thinking": "beta", "routing": "local", "tool_decision": "alpha"},
    )


def test_repos_sizes_and_revisions_match_the_tree(tree):
    report = scan_cache(tree.root)
    assert report.exists and report.cache_dir == tree.root.resolve()
    assert {r.cache_id for r in report.repos} == {
        "model/org/alpha",
        "model/org/beta",
        "model/org/gamma",
        "dataset/org/data",
        "model/org/linked",
    }
    alpha = report.repo("org/alpha")
    # the tokenizer blob is shared by both revisions and counted once
    assert alpha.size_on_disk_bytes == len(TOKENIZER) + len(ALPHA_OLD_WEIGHTS) + len(ALPHA_NEW_WEIGHTS)
    assert alpha.files_count == 3
    assert {r.commit_hash for r in alpha.revisions} == {ALPHA_NEW, ALPHA_OLD}
    new = alpha.revision(ALPHA_NEW)
    assert new.refs == ("main",) and not new.detached
    assert new.size_on_disk_bytes == len(TOKENIZER) + len(ALPHA_NEW_WEIGHTS)
    assert sorted(f.name for f in new.files) == ["model.safetensors", "tokenizer.json"]
    assert alpha.revision(ALPHA_OLD).detached
    beta = report.repo("org/beta")
    assert sorted(f.name for f in beta.revision(BETA).files) == ["docs/README.md", "model.Q4.gguf"]
    assert report.repo("org/data", "dataset").repo_type == "dataset"
    # largest first
    assert [r.size_on_disk_bytes for r in report.repos] == sorted((r.size_on_disk_bytes for r in report.repos), reverse=True)
    assert report.incomplete_size_bytes == len(INCOMPLETE)
    assert report.repos_size_bytes == sum(r.size_on_disk_bytes for r in report.repos)
    # broken/blobs/deadbeef (100) + dangling and badref repos' files + the stray file
    assert report.corrupted_size_bytes > 100
    assert report.size_on_disk_bytes == report.repos_size_bytes + len(INCOMPLETE) + report.corrupted_size_bytes


def test_sizes_agree_with_huggingface_hub(tree):
    from huggingface_hub import scan_cache_dir

    ours = {r.cache_id: (r.size_on_disk_bytes, r.files_count, r.revisions_count) for r in scan_cache(tree.root).repos}
    theirs = {
        f"{r.repo_type}/{r.repo_id}": (r.size_on_disk, r.nb_files, len(r.revisions)) for r in scan_cache_dir(tree.root).repos
    }
    assert ours == theirs


def test_without_settings_nothing_is_referenced(tree):
    report = scan_cache(tree.root)
    assert report.referenced_repos == ()
    assert report.unreferenced_size_bytes == report.repos_size_bytes
    assert report.missing == () and report.local_files == ()


def test_references_mark_models_roles_and_pinned_revisions(tree, settings):
    report = scan_cache(tree.root, settings)
    alpha = report.repo("org/alpha")
    assert alpha.referenced
    by_model = {ref.model_id: ref for ref in alpha.referenced_by}
    assert set(by_model) == {"alpha", "badrev"}
    assert by_model["alpha"].roles == ("tool_decision", "response")
    assert by_model["alpha"].revision == "main" and by_model["alpha"].commit_hash == ALPHA_NEW
    assert by_model["badrev"].commit_hash is None
    assert alpha.revision(ALPHA_NEW).pinned_by == ("alpha",)
    assert alpha.revision(ALPHA_OLD).pinned_by == ()

    beta = report.repo("org/beta")
    assert {ref.model_id for ref in beta.referenced_by} == {"beta", "nofile"}
    assert beta.revision(BETA).pinned_by == ("beta", "nofile")
    assert [ref.roles for ref in beta.referenced_by if ref.model_id == "beta"] == [("thinking",)]

    assert {r.repo_id for r in report.unreferenced_repos} == {"org/gamma", "org/data", "org/linked"}


def test_missing_models_say_why(tree, settings, tmp_path):
    report = scan_cache(tree.root, settings)
    missing = {m.model_id: m for m in report.missing}
    assert set(missing) == {"absent", "badrev", "nofile", "corrupt", "gone"}
    assert missing["absent"].reason == "not in the cache"
    assert "'v2'" in missing["badrev"].reason and "main" in missing["badrev"].reason
    assert "missing.gguf" in missing["nofile"].reason
    assert "corrupted" in missing["corrupt"].reason
    assert missing["gone"].reason == "file not found"
    assert missing["absent"].source == "hf:org/absent@main"


def test_local_model_files_outside_the_cache(tree, settings, tmp_path):
    report = scan_cache(tree.root, settings)
    assert [(f.model_id, f.kind, f.path, f.size_bytes, f.roles) for f in report.local_files] == [
        ("local", "path", tmp_path / "models" / "local.gguf", 1234, ("routing",))
    ]


def test_bundled_package_model_is_a_local_file(tree, bundled_gguf):
    report = scan_cache(tree.root, settings_from_dict({}, env={}))
    assert len(report.local_files) == 1
    local = report.local_files[0]
    assert local.kind == "package" and local.path == bundled_gguf
    assert local.size_bytes == bundled_gguf.stat().st_size
    assert set(local.roles) == {"tool_decision", "routing", "thinking", "response"}


def test_path_into_a_snapshot_pins_that_revision(tree):
    path = tree.repo("org/gamma") / "snapshots" / GAMMA_NEW / "w.bin"
    report = scan_cache(tree.root, _settings({"g": {"path": str(path)}}))
    gamma = report.repo("org/gamma")
    assert gamma.referenced and gamma.referenced_by[0].commit_hash == GAMMA_NEW
    assert gamma.referenced_by[0].filename == "w.bin"
    assert gamma.revision(GAMMA_NEW).pinned_by == ("g",)
    assert report.local_files == () and report.missing == ()


def test_tag_and_short_hash_revisions_pin_their_commit(tmp_path):
    root = tmp_path / "hub"
    write_revision(root, "org/tagged", ALPHA_OLD, {"a": b"1"}, refs=["v1.0"])
    write_revision(root, "org/tagged", ALPHA_NEW, {"a": b"2"}, refs=["main"])
    report = scan_cache(root, _settings({"t": {"repo": "org/tagged", "revision": "v1.0"}, "s": {"repo": "org/tagged", "revision": ALPHA_NEW[:10]}}))
    repo = report.repo("org/tagged")
    assert repo.revision(ALPHA_OLD).pinned_by == ("t",)
    assert repo.revision(ALPHA_NEW).pinned_by == ("s",)


def test_warnings_list_broken_entries_with_paths_and_sizes(tree):
    report = scan_cache(tree.root)
    kinds: dict[str, list] = {}
    for w in report.warnings:
        kinds.setdefault(w.kind, []).append(w)
    corrupted = {w.repo_id: w for w in kinds["corrupted_repo"]}
    assert set(corrupted) == {"org/broken", "org/dangling", "org/badref"}
    assert corrupted["org/broken"].size_bytes == 100
    assert "snapshots" in corrupted["org/broken"].message.lower()
    assert corrupted["org/broken"].path == tree.repo("org/broken").resolve()

    [dangling] = kinds["dangling_symlink"]
    assert dangling.path.name == tree.dangling_link.name and dangling.repo_id == "org/dangling"
    assert dangling.target.endswith("missing-blob")

    [bad_ref] = kinds["broken_ref"]
    assert bad_ref.path.name == "v1" and MISSING_COMMIT[:12] in bad_ref.message

    [incomplete] = kinds["incomplete"]
    assert incomplete.path.name == tree.incomplete.name and incomplete.size_bytes == len(INCOMPLETE)
    assert incomplete.repo_id == "org/gamma"

    [outside] = kinds["outside_symlink"]
    assert outside.path.name == "weights.bin" and outside.repo_id == "org/linked"
    assert outside.target == str(tree.outside_file.resolve()) and outside.size_bytes == len(OUTSIDE)
    assert report.repo("org/linked").revisions[0].outside_links == (outside.path,)

    [stray] = kinds["not_a_repo"]
    assert stray.path.name == "notes.txt" and stray.size_bytes == len("not a repo\n")


def test_missing_cache_dir_gives_an_empty_report(tmp_path, settings):
    report = scan_cache(tmp_path / "nowhere", settings)
    assert not report.exists and report.repos == () and report.warnings == ()
    assert {m.model_id for m in report.missing} >= {"alpha", "beta", "absent"}
    assert [f.model_id for f in report.local_files] == ["local"]


def test_cache_dir_that_is_a_file_is_an_input_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        scan_cache(path)


def test_cache_dir_resolution_order(tmp_path):
    assert resolve_cache_dir("/x/y", env={"HF_HUB_CACHE": "/a"}) == Path("/x/y")
    assert resolve_cache_dir(env={"HF_HUB_CACHE": "/a", "HF_HOME": "/h"}) == Path("/a")
    assert resolve_cache_dir(env={"HUGGINGFACE_HUB_CACHE": "/old", "HF_HOME": "/h"}) == Path("/old")
    assert resolve_cache_dir(env={"HF_HOME": "/h"}) == Path("/h/hub")
    assert resolve_cache_dir(env={"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/huggingface/hub")
    assert resolve_cache_dir(env={}) == Path("~/.cache/huggingface/hub").expanduser()


def test_default_cache_dir_is_read_from_the_environment_at_call_time(tmp_path, monkeypatch):
    root = tmp_path / "elsewhere"
    write_revision(root, "org/env", ALPHA_NEW, {"a": b"1"}, refs=["main"])
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    assert [r.repo_id for r in scan_cache().repos] == ["org/env"]


def test_report_is_json_ready(tree, settings):
    report = scan_cache(tree.root, settings)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["size_on_disk_bytes"] == report.size_on_disk_bytes
    alpha = next(r for r in data["repos"] if r["repo_id"] == "org/alpha")
    assert alpha["referenced"] is True and isinstance(alpha["size_on_disk_bytes"], int)
    assert {f["name"] for rev in alpha["revisions"] for f in rev["files"]} == {"tokenizer.json", "model.safetensors"}
    assert {w["kind"] for w in data["warnings"]} >= {"incomplete", "corrupted_repo", "outside_symlink"}
    assert report.repo("org/alpha").size_on_disk_str.endswith("KiB")
    assert report.repo("org/alpha").last_accessed_str


def test_report_is_frozen(tree):
    report = scan_cache(tree.root)
    with pytest.raises(AttributeError):
        report.repos = ()  # type: ignore[misc]


def test_a_blob_that_links_out_of_the_cache_is_an_outside_link(tmp_path):
    root = tmp_path / "hub"
    elsewhere = tmp_path / "elsewhere.bin"
    elsewhere.write_bytes(b"e" * 77)
    snap = write_revision(root, "org/sneaky", ALPHA_NEW, {"w.bin": b"w" * 10, "ok.json": b"{}"}, refs=["main"])
    blob = (snap / "w.bin").resolve()
    blob.unlink()
    blob.symlink_to(elsewhere)
    report = scan_cache(root)
    [warning] = [w for w in report.warnings if w.kind == "outside_symlink"]
    assert warning.path == root.resolve() / "models--org--sneaky" / "snapshots" / ALPHA_NEW / "w.bin"
    assert warning.target == str(elsewhere.resolve()) and warning.size_bytes == 77
    assert [p.name for p in report.repo("org/sneaky").revisions[0].outside_links] == ["w.bin"]


def test_link_resolution_agrees_with_realpath(tmp_path):
    import os

    from mimir.cache._fs import Resolver

    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "real" / "deep" / "f").write_text("x")
    (tmp_path / "dirlink").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "rel").symlink_to("deep/f")
    (tmp_path / "real" / "up").symlink_to("../real/deep/f")
    (tmp_path / "real" / "through").symlink_to("../dirlink/deep/../deep/f")
    (tmp_path / "real" / "chain").symlink_to("up")
    (tmp_path / "real" / "abs").symlink_to(tmp_path / "dirlink" / "deep" / "f")
    (tmp_path / "real" / "dangling").symlink_to("nowhere/x")
    (tmp_path / "real" / "loop1").symlink_to("loop2")
    (tmp_path / "real" / "loop2").symlink_to("loop1")
    (tmp_path / "real" / "dotdot_after_link").symlink_to("../dirlink/deep/../../real/deep/f")
    # ``..`` after a link climbs from the link's target, not lexically
    (tmp_path / "other" / "inner").mkdir(parents=True)
    (tmp_path / "other" / "f2").write_text("y")
    (tmp_path / "innerlink").symlink_to(tmp_path / "other" / "inner")
    (tmp_path / "real" / "nonlexical").symlink_to("../innerlink/../f2")
    resolver = Resolver()
    for name in ("rel", "up", "through", "chain", "abs", "dotdot_after_link", "nonlexical", "dangling"):
        for base in (tmp_path / "real", tmp_path / "dirlink"):
            real, exists = resolver.resolve(base / name)
            assert real == os.path.realpath(base / name), name
            assert exists == os.path.exists(base / name), name
    _real, exists = resolver.resolve(tmp_path / "real" / "loop1")
    assert exists is False
