"""The vendored data: every file listed with its true hash and size, nothing unlisted, and a damaged file refused
with an error naming it."""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest

from tools import assets


def stored_files() -> set[str]:
    skip = {"SHA256SUMS", "README.md", "BUILD"}
    return {str(p.relative_to(assets.ROOT)) for p in assets.ROOT.rglob("*") if p.is_file() and p.name not in skip}


def test_every_file_is_listed_with_its_hash_and_nothing_else_is_there():
    listed = assets.manifest()
    assert set(listed) == stored_files()
    for rel, digest in listed.items():
        assert hashlib.sha256((assets.ROOT / rel).read_bytes()).hexdigest() == digest, rel


def test_readme_gives_each_files_size_and_hash():
    rows = {}
    for line in (assets.ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([^`]+)` \| (.+?) \| (.+?) \| ([\d,]+) \| `([0-9a-f]{64})` \|", line)
        if m:
            rows[m.group(1)] = (int(m.group(4).replace(",", "")), m.group(5), m.group(2), m.group(3))
    assert set(rows) == set(assets.manifest())
    for rel, (size, digest, source, licence) in rows.items():
        assert (assets.ROOT / rel).stat().st_size == size and assets.manifest()[rel] == digest, rel
        assert source.strip() and licence.strip(), rel
    total = sum(size for size, *_ in rows.values())
    assert total < 15_000_000  # well under the 30 MB the project allows itself


def test_paths_are_checked_and_bad_names_are_named(tmp_path, monkeypatch):
    assert assets.path("gsm8k/test.jsonl.gz").is_file()
    assert len(assets.jsonl("gsm8k/test.jsonl.gz")) == 1319
    assert len(list(assets.path("niah/paul_graham_essays").glob("*.txt"))) == 49
    with pytest.raises(assets.AssetError, match="'gsm8k/dev.jsonl' is not in .*SHA256SUMS.*gsm8k"):
        assets.path("gsm8k/dev.jsonl")
    assert assets.resolve("assets:web/c4_sample.jsonl") == assets.ROOT / "web/c4_sample.jsonl"
    monkeypatch.setenv("HERD_CALLER_DIR", str(tmp_path))
    assert assets.resolve("mine.jsonl") == tmp_path / "mine.jsonl"


def test_a_damaged_or_missing_file_is_refused_by_name(tmp_path, monkeypatch):
    copy = tmp_path / "data"
    shutil.copytree(assets.ROOT / "web", copy / "web")
    shutil.copy(assets.ROOT / "SHA256SUMS", copy / "SHA256SUMS")
    monkeypatch.setattr(assets, "ROOT", copy)
    assets.manifest.cache_clear()
    try:
        assert assets.path("web/ccnet-sample.wet.txt").is_file()
        target = copy / "web/ccnet-sample.wet.txt"
        target.write_bytes(target.read_bytes().replace(b"Mark Twain", b"Mark Twaim"))
        with pytest.raises(assets.AssetError, match=r"ccnet-sample\.wet\.txt: sha256 [0-9a-f]{64} does not match"):
            assets.path("web/ccnet-sample.wet.txt")
        (copy / "web/c4_sample.jsonl").unlink()
        with pytest.raises(assets.AssetError, match=r"c4_sample\.jsonl: listed in SHA256SUMS but missing"):
            assets.path("web")
    finally:
        assets.manifest.cache_clear()
