"""Shared test helpers: a tokenizer stand-in, corpus generation, running a pipeline, reading its fates."""

from __future__ import annotations

import json
from pathlib import Path

import tiktoken

from data.document import read_documents
from data.pipeline import PipelineConfig, run
from data.synthetic import SyntheticConfig, write
from tools.config import load


class ByteTokenizer:
    """A minimal tiktoken-based stand-in with the model.tokenizer.Tokenizer API (one token per byte)."""

    def __init__(self):
        self.bos_id, self.eos_id, self.vocab_size = 256, 257, 258
        self.enc = tiktoken.Encoding(
            name="bytes", pat_str=r"\S+|\s+", special_tokens={}, mergeable_ranks={bytes([i]): i for i in range(256)}
        )

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self.__init__()

    def encode_batch(self, texts, *, bos=False, eos=False, num_threads=1):
        return [
            ([self.bos_id] if bos else []) + self.enc.encode_ordinary(t) + ([self.eos_id] if eos else []) for t in texts
        ]

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


def corpus(root: Path, **kw) -> Path:
    """Generate the synthetic corpus into root (once: reused when root/truth.jsonl exists)."""
    if not (root / "truth.jsonl").exists():
        write(SyntheticConfig(output=str(root), **kw), root)
    return root


def run_pipeline(out: Path, overrides: list[str], configs: list[Path] = (), tokenizer=None) -> dict:
    cfg = load(PipelineConfig, list(configs), [f"output={out}", "progress=false", *overrides])
    return run(cfg, tokenizer=tokenizer)


def dropped(out: Path) -> dict[str, dict]:
    """id -> the dropped-document record."""
    recs = {}
    for f in sorted((out / "dropped").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            recs[r["id"]] = r
    return recs


def final_documents(out: Path) -> dict:
    return {d.id: d for f in sorted((out / "documents").glob("*.parquet")) for d in read_documents(f)}


def tree_bytes(root: Path, skip=("logs", "_work")) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), leaving out the given top-level folders."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in skip
    }
