"""One way to write files: a file or folder appears under its final name only when complete.

Everything the project writes goes through here: text, JSON and bytes (:func:`write_text`,
:func:`write_json`, :func:`write_bytes`), whole folders (:func:`atomic_folder`), plus the content
hash (:func:`sha256_file`) and version stamps (:func:`package_version`, :func:`package_versions`)
that files carry. A temporary sibling is written first and renamed into place (``os.replace`` is
atomic on one file system), so a killed process leaves the old file or none, never half of one.
Temporaries are hidden, named ``.<name>.partial-<random>``, and :func:`remove_partials` clears
those a killed process left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

PARTIAL_MARK = ".partial-"


def partial_prefix(path: Path) -> str:
    """The name prefix of ``path``'s temporary siblings (hidden, and recognisable by :func:`remove_partials`)."""
    return f".{path.name}{PARTIAL_MARK}"


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created) via a temporary sibling renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=partial_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (a trailing newline) to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path for writers that need a file name (video, parquet, numpy, torch).

    On normal exit the temporary file replaces ``path``; on an exception it is removed. The
    temporary keeps ``path``'s suffix, since some writers choose the format by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=partial_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on normal exit it is renamed to ``path``.

    An existing ``path`` is replaced only if ``overwrite`` (after the new folder is complete);
    otherwise it is a ``FileExistsError``. On an exception the temporary folder is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(path), dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path}: already exists")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed writer left directly inside ``folder``; returns what was removed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.startswith(".") and PARTIAL_MARK in entry.name:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
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
