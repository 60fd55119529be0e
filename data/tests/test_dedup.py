"""MinHash signatures and LSH against brute-force Jaccard, URL normalisation, ccNet line dedup counts."""

import json
import random

import numpy as np

from data.minhash import MinHashConfig, MinHasher, band_hashes, clusters, evaluate
from data.synthetic_text import edit_words
from data.tests.helpers import dropped, final_documents, run_pipeline
from data.textnorm import ngram_hashes, normalize
from data.urldedup import crawl_time, normalize_url
from tools import assets


def c4_texts(n):
    with assets.open_text("web/c4_sample.jsonl") as f:
        return [json.loads(line)["text"] for line in f][:n]


def test_signature_agreement_estimates_jaccard():
    texts = [t for t in c4_texts(200) if len(t.split()) > 300][:20]
    rng = random.Random(0)
    h = MinHasher(112, 5, seed=1)
    errors = []
    for t in texts:
        other = edit_words(rng, t, rng.randint(2, 40))
        a, b = (set(ngram_hashes(normalize(x).split(), 5).tolist()) for x in (t, other))
        true = len(a & b) / len(a | b)
        sig = h.signatures([t, other])
        errors.append((sig[0] == sig[1]).mean() - true)
    assert abs(np.mean(errors)) < 0.03 and np.std(errors) < 0.06  # the estimator's sd at 112 permutations ~0.04
    # Batched signatures equal one-at-a-time ones, whatever the block size.
    small = MinHasher(112, 5, seed=1, batch_shingles=37)
    assert (small.signatures(texts) == np.stack([h.signatures([t])[0] for t in texts])).all()
    assert (h.signatures([""])[0] == np.iinfo(np.uint32).max).all()


def test_lsh_precision_recall_against_brute_force():
    """Pairs at Jaccard >= 0.8 (brute force over all pairs) vs pairs MinHash LSH puts together."""
    rng = random.Random(1)
    base = [t for t in c4_texts(600) if len(t.split()) > 120][:150]
    texts = list(base)
    for t in base[:80]:  # near duplicates with a spread of similarities around the 0.8 threshold
        texts.append(edit_words(rng, t, rng.randint(1, max(2, len(t.split()) // 25))))
    # FineWeb's 14 x 8 bands: the S-curve is centred near 0.72, so pairs at 0.6-0.8 become candidates too.
    r = evaluate(texts, MinHashConfig(), threshold=0.8)
    assert r["true pairs"] >= 35
    assert r["candidate recall"] >= 0.95 and r["component recall"] >= 0.95
    assert r["candidate precision"] >= 0.5 and r["component precision"] >= 0.5
    # Verifying candidates by signature agreement trades a little recall for precision.
    v = evaluate(texts, MinHashConfig(verify=0.8), threshold=0.8)
    assert v["component precision"] >= 0.8 and v["component recall"] >= 0.8


def test_clusters_keep_one_deterministic_survivor():
    cols = [np.array([1, 1, 2, 3, 3], np.uint64), np.array([5, 6, 7, 7, 8], np.uint64)]
    prio = np.array([[9, 0], [4, 0], [7, 0], [1, 0], [8, 0]], np.uint64)
    labels, keep, sizes = clusters(cols, prio)
    assert len(set(labels[[0, 1]])) == 1 and len(set(labels[[2, 3, 4]])) == 1 and labels[0] != labels[2]
    assert keep.tolist() == [False, True, False, True, False]  # the smallest priority of each component
    assert sizes.tolist() == [2, 2, 3, 3, 3]
    sig = np.arange(2 * 112, dtype=np.uint32).reshape(2, 112)
    salted = band_hashes(sig, 14, 8, np.array([1, 2], np.uint64))
    assert (band_hashes(sig, 14, 8) != salted).all()


def test_url_normalisation():
    assert normalize_url("<HTTPS://www.Example.com:443/a/b/?utm_source=x&b=2&a=1#frag>") == "example.com/a/b?a=1&b=2"
    assert normalize_url("http://example.com") == normalize_url("https://example.com/") == "example.com/"
    assert normalize_url("http://example.com:8080/x") == "example.com:8080/x"
    assert crawl_time("2024-01-02T00:00:00Z") > crawl_time("2023-12-31T23:59:59Z") > crawl_time("") == 0


def test_line_dedup_threshold(tmp_path):
    """A line in 7 documents is removed everywhere, a line in 6 stays (ccNet: more than 6 times)."""
    docs = []
    words = [
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
        "foxtrot",
        "golf",
        "hotel",
        "india",
        "juliet",
        "kilo",
        "lima",
    ]
    for i in range(12):
        # Lines that differ only in digits are the same line to ccNet (digits -> 0): vary words instead.
        lines = [f"a line about {words[i]} and {words[-1 - i]}", f"another sentence on {words[i]}"]
        if i < 7:
            lines.append("Subscribe to our newsletter!")
        if i < 6:
            lines.append("Share this on Twitter.")
        docs.append({"id": f"d{i}", "text": "\n".join(lines)})
    docs.append({"id": "only", "text": "Subscribe to our newsletter!"})  # nothing left once removed
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "out"
    summary = run_pipeline(out, [f"input={path}", "steps=[read,line_dedup]", "executor=inline"])
    final = final_documents(out)
    assert not any("newsletter" in d.text.lower() for d in final.values())
    assert sum("Share this on Twitter." in d.text for d in final.values()) == 6
    assert dropped(out)["only"]["reason"] == "every line is a frequent duplicate"
    assert summary["steps"]["line_dedup"]["counters"]["lines removed"] == 8
