"""The synthetic corpus: deterministic, and every planted defect meets its fate in the tiny pipeline."""

from collections import Counter, defaultdict

import pytest

from data.pipeline import run_tiny
from data.shards import ShardSet
from data.synthetic import SyntheticConfig, load_truth, write
from data.tests.helpers import corpus, dropped, final_documents, tree_bytes
from model.tokenizer import Tokenizer

SURVIVES_CURATION = {None, "mix"}  # kept, or only down-sampled by the mix


def test_generator_is_deterministic(tmp_path):
    a = write(SyntheticConfig(output="a", scale=0.1, seed=3), tmp_path / "a")
    b = write(SyntheticConfig(output="b", scale=0.1, seed=3), tmp_path / "b")
    assert a["documents"] == b["documents"] > 100
    bytes_a, bytes_b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert list(bytes_a) == list(bytes_b)
    diff = [k for k in bytes_a if k != "paths.yaml" and bytes_a[k] != bytes_b[k]]
    assert diff == []
    other = write(SyntheticConfig(output="c", scale=0.1, seed=4), tmp_path / "c")
    assert tree_bytes(tmp_path / "c")["truth.jsonl"] != bytes_a["truth.jsonl"] and other["documents"] > 100


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    corpus(root / "corpus", scale=0.35, shards=3)
    out = root / "out"
    summary = run_tiny(root / "corpus", out, Tokenizer.llama3(), ["executor=inline", "progress=false"])
    truth = load_truth(root / "corpus")
    return summary, truth, dropped(out), final_documents(out), out


def fate(drops, doc_id):
    r = drops.get(doc_id)
    return None if r is None else r["step"]


def test_every_document_is_accounted_for(tiny_run):
    summary, truth, drops, final, _ = tiny_run
    assert summary["funnel_ok"], summary["funnel_errors"]
    assert summary["documents_in"] == len(truth)
    assert set(drops) | set(final) == set(truth) and not set(drops) & set(final)
    assert summary["documents_dropped"] == len(drops)


def test_planted_drops_are_caught_by_their_step(tiny_run):
    _, truth, drops, _, _ = tiny_run
    expected = [t for t in truth.values() if t["expect"] == "dropped"]
    kinds = Counter(t["kind"] for t in expected)
    assert set(kinds) >= {
        "recrawl_old",
        "pii_dense",
        "dirty",
        "blocked_domain",
        "log_spam",
        "keyword_spam",
        "gibberish",
        "empty_page",
        "binary",
    }
    wrong = [(t["kind"], fate(drops, t["id"]), t["steps"]) for t in expected if fate(drops, t["id"]) not in t["steps"]]
    assert wrong == []


def test_each_duplicate_group_keeps_exactly_one(tiny_run):
    summary, truth, drops, _, _ = tiny_run
    order = list(summary["steps"])
    before = set(order[: order.index("minhash")])
    groups = defaultdict(list)
    for t in truth.values():
        if t["group"]:
            groups[t["group"]].append(t)
    assert (
        len([g for g in groups if g.startswith("exact")]) >= 5 and len([g for g in groups if g.startswith("near")]) >= 5
    )
    for name, members in groups.items():
        reached = [m for m in members if fate(drops, m["id"]) not in before]  # copies share their fate up to there
        survivors = [m for m in reached if fate(drops, m["id"]) != "minhash"]
        assert len(survivors) == (1 if reached else 0), (name, [(m["kind"], fate(drops, m["id"])) for m in members])
    near = [t["planted"]["jaccard"] for t in truth.values() if t["kind"] == "near_dup"]
    assert min(near) >= 0.85


def test_controls_survive_dedup(tiny_run):
    _, truth, drops, _, _ = tiny_run
    for t in truth.values():
        if t["kind"] == "partial_overlap":
            assert fate(drops, t["id"]) != "minhash" and t["planted"]["jaccard"] < 0.6
        if t["kind"] == "recrawl_newest":
            assert fate(drops, t["id"]) != "url_dedup"


def test_boilerplate_lines_removed_pages_kept(tiny_run):
    _, truth, drops, final, out = tiny_run
    pages = [t for t in truth.values() if t["kind"] == "boilerplate"]
    reached = [t for t in pages if fate(drops, t["id"]) in SURVIVES_CURATION or t["id"] in final]
    assert len(reached) >= 0.7 * len(pages) >= 6
    for t in reached:
        if t["id"] in final:
            text = final[t["id"]].text
            assert not any(line in text for line in t["planted"]["boilerplate"])


def test_pii_is_masked(tiny_run):
    _, truth, drops, final, _ = tiny_run
    pages = [t for t in truth.values() if t["kind"] == "pii"]
    kept = [final[t["id"]] for t in pages if t["id"] in final]
    assert len(kept) >= 0.6 * len(pages) >= 4
    for doc, t in ((final[t["id"]], t) for t in pages if t["id"] in final):
        assert not any(v in doc.text for v in t["planted"]["pii"].values())
        assert "<EMAIL>" in doc.text and "<PHONE>" in doc.text and "<IP_ADDRESS>" in doc.text
    assert all(fate(drops, t["id"]) != "pii" for t in pages)


def test_clean_documents_survive_with_their_category(tiny_run):
    _, truth, drops, final, _ = tiny_run
    by_cat = defaultdict(list)
    for t in truth.values():
        if t["kind"] == "clean":
            by_cat[t["category"]].append(t)
    floors = {"general": 0.7, "math": 0.95, "code": 0.95, "multilingual": 0.95}
    for cat, docs in by_cat.items():
        survived = [t for t in docs if fate(drops, t["id"]) in SURVIVES_CURATION]
        assert len(survived) >= floors[cat] * len(docs), (cat, Counter(fate(drops, t["id"]) for t in docs))
    labelled = [(t, final[t["id"]]) for docs in by_cat.values() for t in docs if t["id"] in final]
    right = sum(d.category == t["category"] for t, d in labelled)
    assert right >= 0.95 * len(labelled)
    multi = [(t, d) for t, d in labelled if t["category"] == "multilingual"]
    assert sum(d.lang == t["lang"] for t, d in multi) >= 0.95 * len(multi)


def test_passkey_documents_reach_the_long_context_set(tiny_run):
    _, truth, drops, final, out = tiny_run
    keys = [t for t in truth.values() if t["kind"] == "passkey"]
    assert len(keys) >= 4
    for t in keys:
        assert t["id"] in final and t["planted"]["passkey"] in final[t["id"]].text
        assert final[t["id"]].meta.get("long_context") is True
    long_set = ShardSet(out / "long_context")
    assert sum(e.documents for e in long_set.entries) >= len(keys)
