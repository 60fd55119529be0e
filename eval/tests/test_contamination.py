import json
import random

import numpy as np
import pytest

from data.shards import ShardSet, ShardWriter, write_manifest
from eval import contamination, gsm8k, hendrycks_math
from model.tokenizer import Tokenizer
from tools import assets


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.llama3()


def test_ngram_hashes_are_exact_on_token_windows():
    a = np.array([5, 1, 2, 3, 4, 5, 1, 2, 3, 9])
    h = contamination.ngram_hashes(a, 3)
    assert len(h) == 8 and h[0] != h[1]
    assert h[0] == h[5] and h[1] == h[6]  # (5,1,2) and (1,2,3) occur twice
    assert h[2] != h[7] and len(set(h.tolist())) == 6  # (2,3,4) vs (2,3,9); 6 distinct windows
    assert len(contamination.ngram_hashes(a[:2], 3)) == 0


def test_index_scores_token_coverage_and_ignores_ngrams_across_documents():
    index = contamination.NgramIndex({"a": list(range(100, 120)), "b": list(range(200, 220))}, n=8)
    # Training stream: doc 0 holds a[5:15] (10 tokens -> 3 windows -> tokens 5..14 covered, 10 of 20);
    # b is split across two documents so none of its 8-grams exists inside one document.
    docs = [np.arange(105, 115), np.arange(200, 204), np.arange(204, 220)[:3], np.arange(1, 50)]
    tokens = np.concatenate(docs)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    index.scan(tokens, offsets, block=7)  # tiny blocks: windows at block edges must still be found
    scores = index.scores()
    assert scores["a"] == pytest.approx(10 / 20) and scores["b"] == 0.0


def _seeded_shards(root, tok, eval_texts, rng):
    """Training shards of real web text (C4 sample) with some eval items pasted into documents."""
    with assets.open_text("web/c4_sample.jsonl") as f:
        web = [json.loads(line)["text"] for line in f][:120]
    seeded = {}
    for item_id, text in eval_texts:
        d = rng.randrange(len(web))
        cut = web[d].find(". ") + 2
        web[d] = web[d][:cut] + "Practice problem. " + text + "\n\n" + web[d][cut:]
        seeded[item_id] = d
    entries = []
    for number in range(2):
        w = ShardWriter(root, "general", "train", number)
        for doc in web[number::2]:
            w.add([tok.bos_id, *tok.encode(doc), tok.eos_id])
        entries.append(w.close())
    write_manifest(root, entries, {"name": "llama3", "vocab_size": tok.vocab_size})
    return ShardSet(root), seeded


def test_report_finds_exactly_the_seeded_items_and_scores_the_clean_subset(tok, tmp_path):
    rng = random.Random(0)
    g_items = gsm8k.load()[:60]
    m_items = hendrycks_math.load()[:40]
    benches = {
        "gsm8k": contamination.item_texts("gsm8k", g_items),
        "math500": contamination.item_texts("math500", m_items),
    }
    planted = [(i, benches["gsm8k"][i]) for i in rng.sample(sorted(benches["gsm8k"]), 9)]
    planted += [(i, benches["math500"][i]) for i in rng.sample(sorted(benches["math500"]), 4)]
    # A partial leak: only the first 30% of one more GSM8K item's text is in the training data.
    partial_id = next(i for i in sorted(benches["gsm8k"]) if i not in dict(planted))
    partial_text = benches["gsm8k"][partial_id][: int(0.3 * len(benches["gsm8k"][partial_id]))]
    shards, _ = _seeded_shards(tmp_path, tok, planted + [(partial_id, partial_text)], rng)

    cfg = contamination.ContaminationConfig(n=8, threshold=0.5)
    rep = contamination.report(benches, tok.encode, shards, cfg, progress=False)
    planted_g = sorted(i for i, _ in planted if i.startswith("gsm8k"))
    planted_m = sorted(i for i, _ in planted if not i.startswith("gsm8k"))
    assert rep["gsm8k"]["contaminated_ids"] == planted_g and rep["gsm8k"]["fraction"] == pytest.approx(9 / 60)
    assert rep["math500"]["contaminated_ids"] == planted_m and rep["math500"]["contaminated"] == 4
    assert all(rep["gsm8k"]["scores"][i] > 0.95 for i in planted_g)
    assert 0.15 < rep["gsm8k"]["scores"][partial_id] < 0.45  # partly leaked: scored, not flagged at 0.5
    clean_ids = [i for i in benches["gsm8k"] if i not in planted_g and i != partial_id]
    assert max(rep["gsm8k"]["scores"][i] for i in clean_ids) < 0.1

    # A model that is right exactly on the leaked items: 15% overall, 0% on the clean subset.
    records = [{"id": i, "strict_match": float(i in planted_g)} for i in benches["gsm8k"]]
    s = contamination.clean_subset_score(records, rep["gsm8k"]["contaminated_ids"], "strict_match")
    assert s["all"]["accuracy"] == pytest.approx(0.15) and s["clean"]["accuracy"] == 0.0
    assert s["clean"]["n"] == 51 and s["contaminated"]["accuracy"] == 1.0
