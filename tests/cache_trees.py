"""Real Hugging Face cache trees on disk for the cache inspector tests.

The tree, under ``<tmp>/hub``:

- ``org/alpha``: two revisions; ``main`` -> ALPHA_NEW, ALPHA_OLD detached. They share the
  tokenizer blob; each has its own weights blob.
- ``org/beta``: one revision (``main``), a GGUF plus a nested file.
- ``org/gamma``: ``main`` -> GAMMA_NEW plus a detached GAMMA_OLD, and an interrupted
  download ``blobs/<etag>.incomplete``.
- ``dataset org/data``: a dataset repo.
- ``org/linked``: a snapshot file linking to a file outside the cache.
- ``org/broken``: no ``snapshots`` folder (corrupted).
- ``org/dangling``: a snapshot link whose blob is missing (corrupted).
- ``org/badref``: ``refs/main`` names a commit without a snapshot (corrupted).
- ``notes.txt``: a stray file in the cache root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mimir.cache.layout import repo_folder, write_revision


def commit(char: str) -> str:
    return char * 40


ALPHA_OLD, ALPHA_NEW = commit("a"), commit("b")
BETA = commit("c")
GAMMA_OLD, GAMMA_NEW = commit("d"), commit("e")
DATA = commit("f")
LINKED = commit("1")
BADREF_SNAPSHOT = commit("2")
DANGLING = commit("3")
MISSING_COMMIT = commit("9")

TOKENIZER = b"t" * 700
ALPHA_OLD_WEIGHTS = b"o" * 4000
ALPHA_NEW_WEIGHTS = b"n" * 6000
BETA_GGUF = b"g" * 5000
GAMMA_OLD_WEIGHTS = b"x" * 3000
GAMMA_NEW_WEIGHTS = b"y" * 2000
INCOMPLETE = b"p" * 250
OUTSIDE = b"z" * 900


@dataclass(frozen=True)
class CacheTree:
    root: Path
    outside_file: Path
    incomplete: Path
    outside_link: Path
    dangling_link: Path
    broken_ref: Path
    stray: Path

    def repo(self, repo_id: str, repo_type: str = "model") -> Path:
        return repo_folder(self.root, repo_id, repo_type)


def build_cache(base: Path) -> CacheTree:
    root = base / "hub"
    outside_dir = base / "outside"
    outside_dir.mkdir(parents=True)
    outside_file = outside_dir / "weights.bin"
    outside_file.write_bytes(OUTSIDE)

    write_revision(root, "org/alpha", ALPHA_OLD, {"tokenizer.json": TOKENIZER, "model.safetensors": ALPHA_OLD_WEIGHTS})
    write_revision(
        root, "org/alpha", ALPHA_NEW, {"tokenizer.json": TOKENIZER, "model.safetensors": ALPHA_NEW_WEIGHTS}, refs=["main"]
    )
    write_revision(root, "org/beta", BETA, {"model.Q4.gguf": BETA_GGUF, "docs/README.md": b"r" * 50}, refs=["main"])
    write_revision(root, "org/gamma", GAMMA_OLD, {"w.bin": GAMMA_OLD_WEIGHTS})
    write_revision(root, "org/gamma", GAMMA_NEW, {"w.bin": GAMMA_NEW_WEIGHTS}, refs=["main"])
    incomplete = repo_folder(root, "org/gamma") / "blobs" / "0123abcd.incomplete"
    incomplete.write_bytes(INCOMPLETE)
    write_revision(root, "org/data", DATA, {"train.csv": b"c" * 1200}, repo_type="dataset", refs=["main"])

    snap = write_revision(root, "org/linked", LINKED, {"config.json": b"{}"}, refs=["main"])
    outside_link = snap / "weights.bin"
    outside_link.symlink_to(outside_file)

    broken = repo_folder(root, "org/broken")
    (broken / "blobs").mkdir(parents=True)
    (broken / "blobs" / "deadbeef").write_bytes(b"q" * 100)

    snap = write_revision(root, "org/dangling", DANGLING, {"config.json": b"{1}"}, refs=["main"])
    dangling_link = snap / "model.bin"
    dangling_link.symlink_to("../../blobs/missing-blob")

    write_revision(root, "org/badref", BADREF_SNAPSHOT, {"config.json": b"{2}"}, refs=["main"])
    broken_ref = repo_folder(root, "org/badref") / "refs" / "v1"
    broken_ref.write_text(MISSING_COMMIT)

    stray = root / "notes.txt"
    stray.write_text("not a repo\n")
    return CacheTree(root, outside_file, incomplete, outside_link, dangling_link, broken_ref, stray)


def regular_files(top: Path) -> dict[Path, int]:
    """Every regular file under ``top`` (links not followed) with its size."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames + dirnames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out[path] = path.stat().st_size
    return out


def all_entries(top: Path) -> set[Path]:
    """Every file, link and folder under ``top``, relative to it."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames + dirnames:
            out.add((Path(dirpath) / name).relative_to(top))
    return out


def write_config(path: Path, models: dict[str, dict[str, str]], roles: dict[str, str]) -> Path:
    lines = []
    for model_id, fields in models.items():
        lines.append(f"[models.{model_id}]")
        lines += [f'{key} = "{value}"' for key, value in fields.items()]
        lines.append("")
    lines.append("[roles]")
    lines += [f'{role} = "{model_id}"' for role, model_id in roles.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
