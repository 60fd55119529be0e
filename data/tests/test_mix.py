"""The data mix (target token proportions, validation split, annealing mix, long-context set) and tokenized
shards with exact accounting, with the model's Tokenizer (model.tokenizer)."""

import json
import random

import numpy as np
import pytest

from data.document import Document, write_documents
from data.mix import draw
from data.shards import ShardSet
from data.tests.helpers import ByteTokenizer, run_pipeline
from model.tokenizer import Tokenizer

TARGETS = {"general": 0.5, "math": 0.25, "code": 0.17, "multilingual": 0.08}


def test_draw_lands_within_one_document_of_the_target():
    rng = np.random.default_rng(0)
    tokens = rng.integers(50, 500, 200)
    for target in (0.3, 1.0, 2.7, 10.0):
        copies = draw(tokens, np.arange(200), target * tokens.sum(), max_repeats=4.0)
        got = (copies * tokens).sum()
        assert abs(got - min(target, 4.0) * tokens.sum()) <= tokens.max()
        assert copies.max() <= int(np.ceil(min(target, 4.0)))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    rng = random.Random(0)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "nu",
        "xi",
        "omicron",
        "pi",
        "rho",
    ]
    docs = []
    sizes = {"general": (120, 60), "math": (40, 50), "code": (25, 40), "multilingual": (30, 30), "": (10, 40)}
    for cat, (n, length) in sizes.items():
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(length // 2, 2 * length)))
            q = round(rng.random(), 3)
            docs.append(Document(f"{cat or 'none'}-{i}", text, category=cat, lang="en", meta={"quality": q}))
    docs.append(
        Document(
            "long-0",
            " ".join(rng.choice(words) for _ in range(3000)),
            category="general",
            lang="en",
            meta={"quality": 0.9},
        )
    )
    write_documents(root / "docs.parquet", docs)
    tok_dir = root / "tok"
    Tokenizer({bytes([i]): i for i in range(256)}).save(tok_dir)  # a byte-level tokenizer in the model's format
    out = root / "out"
    summary = run_pipeline(
        out,
        [
            f"input={root / 'docs.parquet'}",
            "steps=[read,tokenize,mix,shards]",
            "executor=inline",
            f"tokenize.tokenizer={tok_dir}",
            "mix.valid_fraction=0.05",
            "mix.long_context_min_tokens=2500",
            "mix.anneal.min_quality=0.5",
        ],
    )
    return summary, out, docs, Tokenizer.load(tok_dir)


def test_mix_reaches_target_proportions(mixed):
    summary, out, _, _ = mixed
    shards = ShardSet(out / "shards")
    shards.verify()
    train = {c: sum(e.tokens for e in shards.select(category=c, split="train")) for c in TARGETS}
    total = sum(train.values())
    biggest_doc = 2 * 2 * 60 * 8  # words x bytes: an upper bound on one document's tokens here
    for cat, share in TARGETS.items():
        assert abs(train[cat] - share * total) <= 2 * biggest_doc, (cat, train[cat] / total)
    mix = json.loads((out / "shards" / "manifest.json").read_text())["extra"]["mix"]
    assert mix["categories"]["code"]["max_copies"] >= 2  # code is up-sampled
    assert all(len(shards.select(category=c, split="valid")) == 1 for c in TARGETS)
    assert summary["funnel_ok"]


def test_exact_token_accounting(mixed):
    summary, out, docs, tok = mixed
    shards = ShardSet(out / "shards")
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == 256 + 256 and manifest["tokenizer"]["sha256"] == tok.fingerprint()
    counted = sum(len(t) for e in shards.entries for t in shards.documents(e))
    assert counted == manifest["totals"]["tokens"] == sum(e.tokens for e in shards.entries)
    by_text = {d.text: d for d in docs}
    copies_seen = {}
    for e in shards.entries:
        for toks in shards.documents(e):
            assert toks[0] == tok.bos_id and toks[-1] == tok.eos_id
            text = tok.decode(toks[1:-1].tolist())
            doc = by_text[text]  # every shard document decodes to an input document
            assert e.category == (doc.category or "general")
            copies_seen[doc.id] = copies_seen.get(doc.id, 0) + 1
    mix = summary["steps"]["mix"]
    assert sum(copies_seen.values()) - len(copies_seen) == mix["counters"]["repeated copies added"]
    tokens_in = summary["steps"]["tokenize"]["counters"]["tokens"]
    dropped = mix["dropped"].get("down-sampled by the mix", 0)
    long_only = "long-0" not in copies_seen  # kept for the long-context set even if the mix did not draw it
    assert len(copies_seen) + dropped + long_only == len(docs)
    assert tokens_in == sum(len(tok.encode(d.text)) + 2 for d in docs)


def test_anneal_and_long_context_sets(mixed):
    _, out, docs, tok = mixed
    anneal = ShardSet(out / "anneal")
    quality = {d.text: d.meta["quality"] for d in docs}
    for e in anneal.entries:
        assert e.split == "train"
        for toks in anneal.documents(e):
            assert quality[tok.decode(toks[1:-1].tolist())] >= 0.5
    shares = {c: sum(e.tokens for e in anneal.select(category=c)) for c in TARGETS}
    assert shares["math"] > shares["multilingual"] and shares["code"] > shares["multilingual"]
    long_set = ShardSet(out / "long_context")
    (entry,) = long_set.entries
    assert entry.documents == 1 and entry.category == "general" and entry.split == "train"
    (toks,) = long_set.documents(entry)
    assert tok.decode(toks[1:-1].tolist()) == next(d.text for d in docs if d.id == "long-0")


def test_any_object_with_the_tokenizer_api(tmp_path):
    """The tokenize step takes any object with encode_batch, bos_id, eos_id and vocab_size."""
    docs = [Document(f"d{i}", f"document number {i} " * 20, category="general") for i in range(6)]
    write_documents(tmp_path / "docs.parquet", docs)
    out = tmp_path / "out"
    run_pipeline(
        out,
        [
            f"input={tmp_path / 'docs.parquet'}",
            "steps=[read,tokenize,mix,shards]",
            "executor=inline",
            "mix.anneal.enabled=false",
        ],
        tokenizer=ByteTokenizer(),
    )
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert manifest["tokenizer"] == {"class": "ByteTokenizer", "vocab_size": 258, "bos_id": 256, "eos_id": 257}
    assert manifest["totals"]["documents"] == 6 and not (out / "anneal").exists()
