"""Small shard sets of real text (the vendored Paul Graham essays, GSM8K, UDHR) with a byte-level tokenizer: the
data of the training tests and of the benchmarks that need no curated corpus."""

from __future__ import annotations

from pathlib import Path

from data.shards import ShardWriter, write_manifest
from tools import assets


def byte_tokenizer():
    """A real model.tokenizer.Tokenizer with the 256 bytes as ranks (vocab 512 with the specials)."""
    from model.tokenizer import Tokenizer

    return Tokenizer({bytes([i]): i for i in range(256)})


def write_shards(root: Path, docs: dict[tuple[str, str], list[list[int]]], vocab: int, tokenizer=None) -> Path:
    """docs[(category, split)] = documents (token lists); one shard per (category, split)."""
    entries = []
    for (category, split), items in docs.items():
        w = ShardWriter(root, category, split, 0)
        for d in items:
            w.add(d)
        entries.append(w.close())
    info = tokenizer.describe() if tokenizer is not None else {"name": "test", "vocab_size": vocab}
    write_manifest(root, entries, info)
    return root


def _paragraphs(text: str, min_chars: int = 80, max_chars: int = 500) -> list[str]:
    """Blank-line paragraphs, long ones cut at spaces into pieces of at most `max_chars`."""
    out = []
    for p in text.split("\n\n"):
        p = p.strip()
        while len(p) > max_chars:
            cut = p.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(p[:cut])
            p = p[cut:].strip()
        if len(p) >= min_chars:
            out.append(p)
    return out


def text_shards(root: Path, chars: int = 120_000) -> Path:
    """Real text, byte-tokenized: Paul Graham essays (general), GSM8K (math), UDHR lines (multilingual)."""
    tok = byte_tokenizer()
    essays = []
    for path in sorted(assets.path("niah/paul_graham_essays").glob("*.txt")):
        essays.extend(_paragraphs(path.read_text(encoding="utf-8")))
    gsm = assets.jsonl("gsm8k/train.jsonl.gz")[:400]
    math = [f"Q: {r['question']}\nA: {r['answer']}" for r in gsm]
    udhr = [r["text"] for r in assets.jsonl("multilingual/udhr_lines.jsonl")]
    udhr = [t for t in udhr if len(t) > 60]

    def docs(texts: list[str], budget: int) -> list[list[int]]:
        out, used = [], 0
        for t in texts:
            if used >= budget:
                break
            out.append(tok.encode(t, bos=True, eos=True))
            used += len(t)
        return out

    def split(texts, budget):
        cut = max(len(texts) // 10, 4)
        return docs(texts[cut:], budget), docs(texts[:cut], budget // 10)

    parts = {}
    for name, texts, share in (("general", essays, 0.6), ("math", math, 0.25), ("multilingual", udhr, 0.15)):
        train, valid = split(texts, int(chars * share))
        parts[(name, "train")], parts[(name, "valid")] = train, valid
    write_shards(root, parts, tok.vocab_size, tok)
    tok.save(root / "tokenizer")  # found by training.export.load_tokenizer
    return root
