"""MinHash signatures and LSH against brute-force Jaccard, URL normalisation, ccNet line dedup counts."""

import json
import random

import numpy as np
import pytest

from data.minhash import MinHashConfig, MinHasher, band_hashes, clusters, components, evaluate
from data.synthetic_text import edit_chars, edit_words
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


def test_cuda_backend_computes_the_same_signatures_or_refuses_clearly():
    """`backend: cuda` signs with kernels/minhash.py in the same hash family and seeds: its NumPy statement equals
    MinHasher's on real text; the GPU equals it where a GPU exists, and refuses naming CUDA's reason otherwise."""
    from kernels import minhash as cuda_minhash

    texts = c4_texts(40) + [""]
    h = MinHasher(112, 5, seed=3)
    sets = [h.shingles(t) for t in texts]
    want = h.signatures_from_shingles(sets)
    offsets = np.cumsum([0] + [len(s) for s in sets])
    np.testing.assert_array_equal(cuda_minhash.signatures_cpu(np.concatenate(sets), offsets, h.a, h.b), want)
    config = MinHashConfig(seed=3, backend="cuda")
    gpu = MinHasher(config.bands * config.rows, config.ngram, config.seed, backend=config.backend)
    count, message = cuda_minhash.device_count()
    if count:
        np.testing.assert_array_equal(gpu.signatures(texts), want)
        assert evaluate(texts, config) == evaluate(texts, MinHashConfig(seed=3))
    else:
        with pytest.raises(RuntimeError, match="needs a CUDA GPU") as refusal:
            evaluate(texts, config)
        assert message in str(refusal.value)
    with pytest.raises(ValueError, match="backend must be numpy or cuda, got 'gpu'"):
        MinHasher(backend="gpu")

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


def udhr_pages(fname: str) -> list[str]:
    body = assets.path(f"multilingual/udhr/{fname}").read_text(encoding="utf-8").split("\n---\n", 1)[-1]
    paras = [p.strip() for p in body.splitlines() if p.strip()]
    return ["\n".join(paras[j : j + 10]) for j in range(0, 80, 10)]


def test_near_duplicates_in_chinese_japanese_korean_and_thai():
    """Character 5-gram shingles find copies with a few characters edited; whitespace 5-grams of the same
    pages are whole sentences and miss them. Distinct pages (and Simplified vs Traditional Chinese) stay apart."""
    rng = random.Random(2)
    for fname, lang in (
        ("udhr_cmn_hans.txt", "zh"),
        ("udhr_cmn_hant.txt", "zh"),
        ("udhr_jpn.txt", "ja"),
        ("udhr_kor.txt", "ko"),
        ("udhr_tha.txt", "th"),
    ):
        pages = udhr_pages(fname)
        copies = [edit_chars(rng, p, max(1, len(p) // 150)) for p in pages]
        r = evaluate(pages + copies, MinHashConfig(), threshold=0.8, lang=lang)
        assert r["component recall"] == 1.0, fname
        if lang == "ko":  # written with spaces: its units are whitespace words (an edit costs five shingles)
            assert r["true pairs"] >= 2 and r["component pairs"] >= len(pages) - 1  # (pairs under 0.8 too)
            continue
        assert r["true pairs"] == r["component pairs"] == len(pages)
        old = evaluate(pages + copies, MinHashConfig(), threshold=0.8, lang="en")  # whitespace words
        assert old["component pairs"] <= 2, fname
    both = udhr_pages("udhr_cmn_hans.txt") + udhr_pages("udhr_cmn_hant.txt")
    assert evaluate(both, MinHashConfig(), lang="zh")["candidate pairs"] == 0


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


def test_components_label_each_node_with_the_smallest_node_of_its_component():
    """Against breadth-first search: random graphs of every density, long chains (the most rounds of
    pointer jumping) and none."""
    rng = np.random.default_rng(0)
    graphs = [(1, []), (5, [])]
    for n in (2, 10, 100, 1000):
        for k in (0, n // 4, n, 3 * n):
            graphs.append((n, [rng.integers(0, n, (k, 2))]))
        order = rng.permutation(n)
        graphs.append((n, [np.stack([order[:-1], order[1:]], axis=1)]))
    for n, edges in graphs:
        adj = [[] for _ in range(n)]
        for a, b in (np.concatenate(edges) if edges else np.zeros((0, 2), int)).tolist():
            adj[a].append(b)
            adj[b].append(a)
        expected = [-1] * n
        for root in range(n):  # in increasing order: each component is first reached from its smallest node
            if expected[root] < 0:
                expected[root], todo = root, [root]
                while todo:
                    for m in adj[todo.pop()]:
                        if expected[m] < 0:
                            expected[m] = root
                            todo.append(m)
        assert components(n, edges).tolist() == expected


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
