"""Filesystem helpers shared by the cache scan and cleanup: resolving links, walking trees
without following links, and deleting only what lies inside one root directory.

Nothing here follows a symbolic link to delete what it points at: links are unlinked, and a
tree whose links resolve outside the root is refused before anything in it is touched.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

_MAX_HOPS = 40


class Resolver:
    """``os.path.realpath`` with the real path of each directory cached.

    A cache holds thousands of snapshot links in a handful of directories; resolving each
    link costs one ``lstat`` and one ``readlink`` instead of one ``lstat`` per path part.
    """

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {}

    def _real_dir(self, path: str) -> str:
        real = self._dirs.get(path)
        if real is None:
            real = os.path.realpath(path)
            self._dirs[path] = real
        return real

    def resolve(self, path: str | os.PathLike) -> tuple[str, bool]:
        """``(real path, exists)``; a dangling link gives the path it points at and False."""
        text = os.path.abspath(path)
        directory, name = os.path.split(text)
        for _ in range(_MAX_HOPS):
            if name in ("", ".", ".."):
                real = os.path.realpath(os.path.join(directory, name))
                return real, os.path.lexists(real)
            current = os.path.join(self._real_dir(directory), name)
            try:
                st = os.lstat(current)
            except OSError:
                return current, False
            if not stat.S_ISLNK(st.st_mode):
                return current, True
            try:
                target = os.readlink(current)
            except OSError:
                return current, False
            directory, name = _split_target(os.path.dirname(current), target)
        return os.path.realpath(text), False  # a link loop


def _split_target(real_base: str, target: str) -> tuple[str, str]:
    """Directory and name a link's ``target`` names, seen from the real directory ``real_base``.

    Leading ``..`` parts of a relative target climb real directories, so they normalise
    lexically; a ``..`` after any other part might follow a link, so that parent is resolved
    for real.
    """
    joined = os.path.join(real_base, target)
    parts = [p for p in target.split(os.sep) if p not in ("", ".")]
    lexical = not os.path.isabs(target)
    seen_name = False
    for part in parts:
        if part == "..":
            if seen_name:
                lexical = False
                break
        else:
            seen_name = True
    if lexical or ".." not in parts:
        return os.path.split(os.path.normpath(joined))
    parent, name = os.path.split(joined)
    return os.path.realpath(parent), name


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path`` (already absolute and normalised) lies inside ``root`` or is root."""
    path_s = os.fspath(path)
    root_s = os.fspath(root).rstrip(os.sep) or os.sep
    return path_s == root_s or path_s.startswith(root_s + os.sep) or root_s == os.sep


@dataclass
class Tree:
    """What lies under one directory, found without following any link.

    ``files`` are regular files with their sizes, ``links`` are symbolic links (to files or
    directories, never entered), ``dirs`` are directories in bottom-up order (deepest first,
    ``top`` last).
    """

    top: Path
    files: list[tuple[Path, int]] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    @property
    def size_bytes(self) -> int:
        return sum(size for _, size in self.files)


def walk_tree(top: Path) -> Tree:
    tree = Tree(top=top)
    _walk_into(top, tree)
    tree.dirs.append(top)
    return tree


def _walk_into(directory: Path, tree: Tree) -> None:
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            tree.links.append(path)
        elif entry.is_dir(follow_symlinks=False):
            _walk_into(path, tree)
            tree.dirs.append(path)
        else:
            try:
                tree.files.append((path, entry.stat(follow_symlinks=False).st_size))
            except FileNotFoundError:
                continue


def links_outside(tree: Tree, root: Path, resolver: Resolver) -> list[tuple[Path, str]]:
    """The links in ``tree`` that resolve outside ``root``, with where they point."""
    found = []
    for link in tree.links:
        real, _exists = resolver.resolve(link)
        if not is_inside(real, root):
            found.append((link, real))
    return found


def check_deletable(path: Path, root: Path) -> str | None:
    """Why ``path`` must not be deleted (``None`` when it may be).

    The path itself may be a link (unlinking it never touches its target), but the directory
    holding it must really lie inside ``root``: a parent that is a link out of the root is
    refused.
    """
    text = os.path.abspath(path)
    if not is_inside(text, root) or text == os.fspath(root):
        return "the path is outside the cache directory"
    parent_real = os.path.realpath(os.path.dirname(text))
    if not is_inside(parent_real, root):
        return f"its directory resolves to {parent_real}, outside the cache directory"
    return None


@dataclass
class Deletion:
    """Running totals of one cleanup run."""

    freed_bytes: int = 0
    deleted: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def unlink(self, path: Path, *, record: bool = True) -> bool:
        """Remove one file or link; counts the bytes of a regular file. Missing is fine."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return True
        except OSError as exc:
            self.failed.append((path, str(exc)))
            return False
        if stat.S_ISDIR(st.st_mode):
            self.failed.append((path, "is a directory"))
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return True
        except OSError as exc:
            self.failed.append((path, str(exc)))
            return False
        if stat.S_ISREG(st.st_mode):
            self.freed_bytes += st.st_size
        if record:
            self.deleted.append(path)
        return True

    def remove_tree(self, tree: Tree) -> bool:
        """Remove a walked tree bottom-up: links and files, then the emptied directories.

        Returns whether everything went; the caller records the tree's top as deleted.
        """
        ok = True
        for link in tree.links:
            ok = self.unlink(link, record=False) and ok
        for path, _size in tree.files:
            ok = self.unlink(path, record=False) and ok
        for directory in tree.dirs:
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self.failed.append((directory, str(exc)))
                ok = False
        return ok
