"""One way to write files: a file or folder appears under its final name only when complete.

Everything the project writes goes through here: text, JSON and bytes (:func:`write_text`,
:func:`write_json`, :func:`write_bytes`), files written by a library that needs a file name
(:func:`atomic_file`: video, Parquet, numpy, torch, matplotlib), whole folders
(:func:`atomic_folder`), and writers that stream over a longer lifetime (:func:`new_partial`,
:func:`commit_partial`, :func:`discard_partial`), plus the content hash (:func:`sha256_file`) and
version stamps (:func:`package_version`, :func:`package_versions`) that files carry.

A hidden temporary sibling is written first and renamed into place (``os.replace`` is atomic on
one file system), so a killed process leaves the old file or none, never half of one. Temporaries
are named ``.<name>.partial-<random>`` and :func:`remove_partials` clears those a killed process
left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from bcarena.envs.errors import BcarenaError

PARTIAL_MARK = ".partial-"


class OutputExistsError(BcarenaError, FileExistsError):
    """An output file or folder already exists and replacing it was not asked for."""


class OutputPathError(BcarenaError, NotADirectoryError):
    """An output's folder cannot be created because a file stands where a folder is needed."""


def partial_prefix(path: str | os.PathLike) -> str:
    """The name prefix of ``path``'s temporary siblings (hidden, and recognisable by :func:`remove_partials`)."""
    return f".{Path(path).name}{PARTIAL_MARK}"


def make_parent(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` goes in (and its parents); a file in the way is an :class:`OutputPathError`."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (parent, *parent.parents) if p.is_file()), parent)
        raise OutputPathError(f"{path}: cannot create its folder because {blocker} is a file") from None
    return parent


def new_partial(path: str | os.PathLike, folder: bool = False) -> Path:
    """Create an empty temporary sibling of ``path`` (a file, or a folder if ``folder``) to fill.

    Parents of ``path`` are created. A temporary file keeps ``path``'s suffix, since some writers
    choose the format by it (OpenCV, ``np.save``, ``savefig``). Finish with :func:`commit_partial`,
    or :func:`discard_partial` on failure.
    """
    path = Path(path)
    make_parent(path)
    if folder:
        return Path(tempfile.mkdtemp(prefix=partial_prefix(path), dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=partial_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def commit_partial(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Rename the finished temporary ``tmp`` to ``path``; returns ``path``.

    An existing ``path`` is replaced only if ``overwrite`` (a folder is swapped in whole: the old
    one is moved aside, then deleted), otherwise it is an :class:`OutputExistsError`, also when a
    folder appeared under ``path`` while ``tmp`` was being filled. On any error ``tmp`` is left in
    place for the caller to discard.
    """
    tmp, path = Path(tmp), Path(path)
    if path.exists():
        if not overwrite:
            raise OutputExistsError(f"{path}: already exists")
        if tmp.is_dir() and path.is_dir():
            _swap_folder(tmp, path)
            return path
    try:
        os.replace(tmp, path)
    except OSError:
        if not overwrite and path.exists():  # a non-empty folder appeared after the check above
            raise OutputExistsError(f"{path}: already exists") from None
        raise
    return path


def _swap_folder(tmp: Path, path: Path) -> None:
    """Replace folder ``path`` by folder ``tmp``; if the second rename fails the old folder is put back.

    The old folder waits in a hidden ``.<name>.old-*`` sibling, which :func:`remove_partials` leaves
    alone: a process killed between the two renames leaves the only copy of the old data there.
    """
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    old = aside / path.name
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def discard_partial(tmp: str | os.PathLike) -> None:
    """Delete a temporary file or folder (missing is fine: it was committed or never written)."""
    tmp = Path(tmp)
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path for writers that need a file name (video, Parquet, numpy, torch, PNG).

    On normal exit the temporary file replaces ``path`` (see :func:`commit_partial`); on an
    exception it is removed and ``path`` is left as it was.
    """
    with _atomic(path, False, overwrite) as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on normal exit it is renamed to ``path``.

    An existing ``path`` is replaced only if ``overwrite``, and only after the new folder is
    complete; otherwise it is an :class:`OutputExistsError`. On an exception the temporary folder
    is removed and ``path`` is left as it was.
    """
    with _atomic(path, True, overwrite) as tmp:
        yield tmp


@contextlib.contextmanager
def _atomic(path: str | os.PathLike, folder: bool, overwrite: bool) -> Iterator[Path]:
    tmp = new_partial(path, folder=folder)
    try:
        yield tmp
        commit_partial(tmp, path, overwrite)
    finally:
        discard_partial(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created, an old file replaced) via a temporary sibling."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(
    path: str | os.PathLike, data: Any, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> Path:
    """Write ``data`` as indented JSON (a trailing newline) to ``path`` atomically.

    ``default`` turns values JSON lacks into JSON ones (e.g. ``str`` for paths), as in ``json.dumps``.
    """
    return write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=default) + "\n")


def remove_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed writer left directly inside ``folder``; returns what was removed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") and PARTIAL_MARK in entry.name:
                discard_partial(entry)
                removed.append(entry)
    return removed


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_version(name: str = "bcarena") -> str:
    """The installed version of distribution ``name``, or ``"unknown"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of the distributions in ``names`` that are installed (absent ones are left out)."""
    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


# ------------------------------------------------------------------ paths built from file content
SAFE_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
SAFE_NAME_LENGTH = 80


class OutsideFolderError(BcarenaError, ValueError):
    """A path read from a file (an id, a file name in a JSON field) would lead outside its folder."""


def safe_name(text: str) -> str:
    """``text`` (an agent id, a bot name, ...) as one file-name component that stays in its folder.

    A name of letters, digits, ``_``, ``.`` and ``-`` that does not start with ``.`` and has at most
    ``SAFE_NAME_LENGTH`` characters is kept as it is. Anything else has each other character replaced
    by ``_``, is cut to that length and gets ``-<hash of the original>`` appended, so two different ids
    never share a file ("a/b" and "a_b" stay apart) and no result is hidden, ``..`` or empty.
    """
    text = str(text)
    if text and not text.startswith(".") and len(text) <= SAFE_NAME_LENGTH and set(text) <= SAFE_NAME_CHARS:
        return text
    cleaned = "".join(c if c in SAFE_NAME_CHARS else "_" for c in text).lstrip(".")[:SAFE_NAME_LENGTH]
    return f"{cleaned or '_'}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def inside(folder: str | os.PathLike, relative: str | os.PathLike, what: str = "path") -> Path:
    """``folder / relative``, checked to stay inside ``folder`` (``..``, absolute paths and symlinks resolved).

    Use it for every path built from file content (a JSON field, an id in a file name): a hand-edited
    file must not make the project read or write elsewhere. ``what`` names the field in the
    :class:`OutsideFolderError` raised otherwise.
    """
    folder = Path(folder)
    path = folder / relative
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise OutsideFolderError(f"{folder}: {what} {str(relative)!r} leads outside this folder")
    return path
