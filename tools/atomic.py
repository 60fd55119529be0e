"""Atomic writes: everything is written to a temporary sibling, then renamed into place.

A reader therefore sees either the old file (or nothing) or the complete new one, never a torn write,
even if the writer is killed with SIGKILL. The result gets the mode a plain `open` would give it: an existing
file's mode, else 0666 (0777 for a directory) less the umask, so teammates on a shared cluster can read it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for an instant, in every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc (not Linux): set and restore
    os.umask(mask)
    return mask


def _mode_for(path: Path, default: int) -> int:
    """What `open` or `mkdir` would leave: the mode of the file being replaced, else `default` less the umask
    (mkstemp and mkdtemp create their files 0600 and 0700)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return default & ~_umask()


@contextlib.contextmanager
def replacing(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of `path` for any writer (np.savez, savefig, write_parquet); when the block
    succeeds it is fsynced and renamed over `path`, on an exception removed. `suffix` keeps an extension the
    writer needs (".npz", ".png")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    try:
        try:
            os.fchmod(fd, _mode_for(path, 0o666))
        finally:
            os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` as a whole when the block succeeds.

    On an exception the temporary directory is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, _mode_for(path, 0o777))
        yield tmp
        publish_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish_directory(src: Path, dst: Path) -> None:
    """Move the finished directory `src` to `dst` in one rename (an existing `dst` is replaced)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)
    _fsync_dir(dst.parent)
