"""The project's own copy of the public data it reads (third_party/data), checked against its SHA256SUMS.

    from tools import assets
    assets.path("gsm8k/test.jsonl.gz")      # the file, after its sha256 is checked
    assets.path("niah/paul_graham_essays")  # a folder: every listed file under it is checked
    assets.resolve("assets:web/c4_sample.jsonl")  # config values: "assets:<path>" or a user path

Nothing reads data from outside the repository: third_party/data/README.md gives each file's source, licence,
size and sha256.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from pathlib import Path

from tools.paths import PACKAGE_ROOT, user_path

ROOT = PACKAGE_ROOT / "third_party" / "data"
PREFIX = "assets:"


class AssetError(RuntimeError):
    pass


@functools.lru_cache(maxsize=1)
def manifest() -> dict[str, str]:
    """SHA256SUMS as {relative path: sha256}."""
    sums = ROOT / "SHA256SUMS"
    if not sums.is_file():
        raise AssetError(f"{sums} is missing: the repository's data folder is incomplete (re-clone it)")
    out = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, rel = line.split(maxsplit=1)
        out[rel.strip()] = digest
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.cache
def _verified(rel: str, size: int, mtime_ns: int) -> None:
    # Keyed by size and mtime too: a file changed while the process runs is checked again.
    want, got = manifest()[rel], sha256(ROOT / rel)
    if got != want:
        raise AssetError(
            f"{ROOT / rel}: sha256 {got} does not match {want} in {ROOT / 'SHA256SUMS'} "
            "(the file was changed or damaged; `git checkout -- third_party/data` restores it)"
        )


def _check(rel: str) -> None:
    file = ROOT / rel
    if not file.is_file():
        raise AssetError(f"{file}: listed in SHA256SUMS but missing (`git checkout -- third_party/data` restores it)")
    st = file.stat()
    _verified(rel, st.st_size, st.st_mtime_ns)


def path(rel: str) -> Path:
    """The checked path of a vendored file, or of a folder whose listed files are all checked."""
    rel = rel.strip("/")
    files = manifest()
    if rel in files:
        _check(rel)
        return ROOT / rel
    under = [f for f in files if f.startswith(rel + "/")]
    if not under:
        known = sorted({f.split("/")[0] for f in files})
        raise AssetError(f"'{rel}' is not in {ROOT / 'SHA256SUMS'} (top-level folders: {', '.join(known)})")
    for f in under:
        _check(f)
    return ROOT / rel


def resolve(spec: str) -> Path:
    """A path given in a config: "assets:<path>" is a vendored file or folder, anything else a user path."""
    return path(spec[len(PREFIX) :]) if spec.startswith(PREFIX) else user_path(spec)


def open_text(rel: str):
    """A vendored text file opened for reading as UTF-8 (.gz files decompressed)."""
    p = path(rel)
    return gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8")


def jsonl(rel: str) -> list[dict]:
    """Every record of a vendored JSONL file (.gz or not)."""
    with open_text(rel) as f:
        return [json.loads(line) for line in f if line.strip()]
