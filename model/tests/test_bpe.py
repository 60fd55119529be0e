import json

import pytest

from model.bpe import extend_bpe, from_hf_json, hf_tokenizer, train_bpe
from model.tokenizer import Tokenizer
from tools import assets


@pytest.fixture(scope="module")
def c4():
    lines = assets.path("web/c4_sample.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines]


@pytest.fixture(scope="module")
def udhr():
    lines = assets.path("multilingual/udhr_lines.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def base(c4):
    return train_bpe(c4[:800], 4096)


def bytes_per_token(tok, texts):
    return sum(len(t.encode()) for t in texts) / sum(len(tok.encode(t)) for t in texts)


MIXED = ["héllo wörld 😀 数据 ÷ \x00\t\n  end", "def f(x):\n    return {'a': [1, 22, 333, 4444]}\n", "  \n\n \r\n"]


def test_train_bpe_format_and_compression(c4, base):
    assert (base.vocab_size, base.n_ranks) == (4096, 3840)
    assert base.bos_id == 3840 and base.eot_id == 3849 and base.special_tokens["<|reserved_special_token_245|>"] == 4095
    assert all(base.ranks[bytes([b])] == b for b in range(256))  # every byte encodable
    held_out = c4[800:]
    for text in held_out[:50] + MIXED:  # lossless on anything, including bytes unseen in training
        assert base.decode(base.encode(text)) == text
    assert bytes_per_token(base, held_out) > 3.3  # 4K merges on English web text: > 3.3 bytes/token
    # Deterministic, and the ids are the saved tokenizer's ids.
    assert train_bpe(c4[:800], 4096).ranks == base.ranks
    with pytest.raises(ValueError, match="fewer than 256 ranks"):
        train_bpe(["abc"], 400)
    # Too little text for min_frequency=2 falls back to 1; too little for any setting is an error.
    small = train_bpe(c4[:3], 1500 + 256)  # 3 documents: 905 ranks at min_frequency=2, 1500 at 1
    assert small.vocab_size == 1756 and small.decode(small.encode(c4[0])) == c4[0]
    with pytest.raises(ValueError, match="support only .* ids, fewer than vocab_size 4096"):
        train_bpe(c4[:3], 4096)


def test_extend_keeps_base_and_helps_other_languages(base, udhr, tmp_path):
    train = [r["text"] for r in udhr if r["line"] % 2 == 0]
    test = {}
    for r in udhr:
        if r["line"] % 2 == 1:
            test.setdefault(r["lang"], []).append(r["text"])
    ext = extend_bpe(base, train, 2048)
    assert ext.n_ranks == base.n_ranks + 2048 and ext.vocab_size == base.vocab_size + 2048
    assert all(ext.ranks[t] == r for t, r in base.ranks.items())  # base ids unchanged
    assert ext.bos_id == ext.n_ranks
    for lang in ("ru", "zh-Hans", "hi", "ar", "el-monoton"):
        before, after = bytes_per_token(base, test[lang]), bytes_per_token(ext, test[lang])
        assert after > 1.3 * before, (lang, before, after)
        assert all(ext.decode(ext.encode(t)) == t for t in test[lang])
    ext.save(tmp_path / "ext")
    assert Tokenizer.load(tmp_path / "ext").encode(test["ru"][0]) == ext.encode(test["ru"][0])


def test_hf_tokenizer_gives_tiktoken_ids(base, c4, udhr, tmp_path):
    llama3 = Tokenizer.llama3()
    texts = c4[:40] + [r["text"] for r in udhr[::25]] + MIXED  # (HF always parses special-token text)
    for tok in (llama3, base):
        hf = hf_tokenizer(tok)
        assert [hf.encode(t, add_special_tokens=False).ids for t in texts] == [tok.encode(t) for t in texts]
        assert hf.token_to_id("<|eot_id|>") == tok.eot_id
        hf.save(str(tmp_path / "tokenizer.json"))
        back = from_hf_json(tmp_path / "tokenizer.json")
        assert back.ranks == tok.ranks and back.special_tokens == tok.special_tokens and back.pat_str == tok.pat_str
