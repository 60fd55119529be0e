import numpy as np
import pytest

from eval import niah
from eval.tests.niah_fakes import Guesser, Oracle
from model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.llama3()


@pytest.fixture(scope="module")
def hay(tok):
    return niah.Haystack(tok)


def test_prompts_fit_the_context_and_needles_sit_between_sentences(tok, hay):
    cfg = niah.NiahConfig(context_lengths=[600, 2000], depths=[0, 50, 100], value="uuid")
    items = niah.samples(cfg, tok, hay)
    assert len(items) == 3 * 2 * 3
    for s in items:
        assert len(s.prompt) + s.max_new_tokens <= s.context_length
        assert len(s.prompt) + s.max_new_tokens > s.context_length - 60  # filled, not just under
        text = tok.decode(s.prompt)
        for v in s.answers:
            # The needle is a whole sentence: the text before it ends a sentence (or is the header).
            before = text[: text.index(f"for {s.key} is: {v}.")].rsplit("One of the special", 1)[0]
            assert before.endswith((". ", "! ", "? ", "\n ", '." ', ".) ")), before[-40:]
        if s.variant == "multikey":
            assert text.count("One of the special magic uuids for") == 1 + cfg.n_distractors
        if s.variant == "multivalue":
            assert len(set(s.answers)) == cfg.n_values
    # Depth: the queried needle's position in the haystack follows the requested percent.
    single = [s for s in items if s.variant == "single" and s.context_length == 2000]
    positions = []
    for s in single:
        text = tok.decode(s.prompt)
        positions.append(text.index(s.answers[0]) / len(text))
    assert positions[0] < 0.1 and 0.4 < positions[1] < 0.6 and positions[2] > 0.9
    assert niah.samples(cfg, tok, hay)[5].prompt == items[5].prompt  # deterministic


def test_scoring_with_a_model_that_retrieves_and_ones_that_do_not(tok, hay, tmp_path):
    cfg = niah.NiahConfig(context_lengths=[512, 1024, 2048], depths=[0, 50, 100])
    items = niah.samples(cfg, tok, hay)
    perfect = niah.run(Oracle(tok), tok, items, progress=False)
    assert [r["correct"] for r in perfect] == [1.0] * len(items)
    guessed = niah.run(Guesser(tok), tok, items, progress=False)
    assert sum(r["correct"] for r in guessed) == 0
    # An oracle that sees only the last 700 tokens: retrieval fails exactly where the needle is out of reach.
    windowed = niah.run(Oracle(tok, window=700), tok, items, progress=False)
    g = niah.summarize(windowed)["grid"]["single"]
    acc = np.array(g["accuracy"])
    assert acc[:, 0].tolist() == [1.0, 1.0, 1.0]  # 512 tokens: everything in reach
    assert acc[0, 2] == 0.0 and acc[2, 2] == 1.0  # 2048 tokens: needle at 0% lost, at 100% found
    png = niah.heatmap(windowed, tmp_path / "niah.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exact_match_rules():
    s = niah.Sample("x", "single", "number", 100, 50.0, "k", ("1234567",), [1], 10)
    assert niah.score(s, " 1234567.")["correct"] == 1.0
    assert niah.score(s, " 12345678.")["correct"] == 0.0  # an 8-digit number is not the value
    assert niah.score(s, " 7654321, then 1234567")["correct"] == 0.0  # the first value counts
    m = niah.Sample("y", "multivalue", "number", 100, 50.0, "k", ("1111111", "2222222", "3333333"), [1], 30)
    r = niah.score(m, " 3333333, 1111111 and 2222222.")
    assert r["correct"] == 1.0 and r["recall"] == 1.0
    r = niah.score(m, " 3333333, 1111111 and 4444444.")
    assert r["correct"] == 0.0 and abs(r["recall"] - 2 / 3) < 1e-9
    u = niah.Sample("z", "single", "uuid", 100, 0.0, "k", ("0f8fad5b-d9cb-469f-a165-70867728950e",), [1], 40)
    assert niah.score(u, " 0f8fad5b-d9cb-469f-a165-70867728950e.")["correct"] == 1.0
    assert niah.score(u, " 0f8fad5b-d9cb-469f-a165-70867728950f.")["correct"] == 0.0


def test_gate_separates_retrieving_from_guessing(tok):
    assert niah.gate(Oracle(tok), tok, 1500, n=5, seed=0) == 1.0
    assert niah.gate(Guesser(tok), tok, 1500, n=5, seed=0) == 0.0
    # Needles at 0%, 25%, 50%, 75%, 100% of a 1500-token context; a 700-token window sees roughly the last half.
    assert niah.gate(Oracle(tok, window=700), tok, 1500, n=5, seed=0) == pytest.approx(0.4, abs=0.2)
