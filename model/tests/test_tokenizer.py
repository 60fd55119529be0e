import json
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_models.datatypes import RawMessage
from llama_models.llama3.chat_format import ChatFormat
from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

from model.tokenizer import MAX_RUN_CHARS, Tokenizer, default_ranks_path, split_long_runs


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.llama3()


@pytest.fixture(scope="module")
def meta():
    return MetaTokenizer(default_ranks_path())


VARIED = [
    "",
    "Hello, world! It's 2024; we've got 1234567 tokens and they'll be ok.",
    "THE QUICK BROWN FOX'S JUMP'S OVER 'THE' LAZY DOG'LL",
    "def fib(n: int) -> int:\n\tif n < 2:\n\t\treturn n\n    return fib(n - 1) + fib(n - 2)  # O(2^n)\r\n",
    '{"key": [1, 2.5e-3, null], "x": "\\u00e9"}\n\n\n',
    "大型语言模型的训练需要大量的数据。我们在中文、日本語、한국어 上测试。",
    "Emoji: 😀👍🏽👨‍👩‍👧‍👦🇫🇷 and symbols ∑∫√π ≠ ≤ ≥ … “quotes” — dashes",
    "Здравствуй, мир! Γειά σου Κόσμε! مرحبا بالعالم שלום עולם नमस्ते दुनिया",
    "trailing spaces   \n   leading\t\t\ttabs\u00a0nbsp\u3000ideographic space\u2028line sep",
    "<|begin_of_text|>not special<|eot_id|><|start_header_id|>user<|end_header_id|>",
    "<|reserved_special_token_17|> <|image|><|python_tag|> <|fake_token|> <|",
    " " * 300 + "x" + "\n" * 40 + "\r\n" * 7,
    "1234567890 12 123 1234 3.14159 -42 1e10 0x1F 1,000,000",
    "a" * 5000,
    "\x00\x01\x7f control \ufffd replacement \ud7ff",
]


@pytest.mark.parametrize("text", VARIED)
def test_ids_identical_to_meta(tok, meta, text):
    for bos, eos in [(False, False), (True, True)]:
        assert tok.encode(text, bos=bos, eos=eos) == meta.encode(text, bos=bos, eos=eos)
    assert tok.decode(tok.encode(text)) == meta.decode(meta.encode(text, bos=False, eos=False)) == text


@pytest.mark.parametrize(
    "text",
    [
        " " * 30_000 + "end",  # one whitespace run over the 25K limit
        "x" * 60_001 + " " * 25_001 + "y\n",  # non-whitespace and whitespace runs, both cut
        ("word " * 90_000)[:-1],  # 450K chars: two 400K pieces
        "z" * 400_005 + "\t" * 100,  # a long run crossing the 400K piece boundary
    ],
    ids=["spaces30k", "runs60k+25k", "words450k", "run-across-400k"],
)
def test_long_inputs_identical_to_meta(tok, meta, text):
    assert tok.encode(text) == meta.encode(text, bos=False, eos=False)


def test_split_matches_meta_per_character_loop(meta):
    text = "a" * 25_000 + " " * 50_001 + "b" * 3 + "\n" * 75_000
    pieces = split_long_runs(text)
    assert pieces == list(meta._split_whitespaces_or_nonwhitespaces(text, MAX_RUN_CHARS))
    assert "".join(pieces) == text and len(pieces) == 5  # 2 cuts in each long run


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80))
def test_random_unicode_identical_to_meta(tok, meta, text):
    assert tok.encode(text) == meta.encode(text, bos=False, eos=False)


def test_special_tokens_only_when_allowed(tok, meta):
    text = "<|start_header_id|>user<|end_header_id|> hi<|eot_id|>"
    plain = tok.encode(text)
    assert not any(tok.is_special(i) for i in plain)
    parsed = tok.encode(text, allowed_special="all")
    assert parsed == meta.encode(text, bos=False, eos=False, allowed_special="all")
    assert parsed[0] == 128006 and parsed[-1] == tok.eot_id == 128009
    only_eot = tok.encode(text, allowed_special={"<|eot_id|>"})
    assert only_eot == meta.encode(text, bos=False, eos=False, allowed_special={"<|eot_id|>"})
    assert only_eot.count(128009) == 1 and 128006 not in only_eot
    with pytest.raises(ValueError, match="unknown special"):
        tok.encode(text, allowed_special={"<|nope|>"})


def test_special_token_table(tok, meta):
    assert tok.special_tokens == meta.special_tokens and len(tok.special_tokens) == 256
    assert (tok.vocab_size, tok.n_ranks, tok.bos_id, tok.eos_id, tok.eot_id) == (128256, 128000, 128000, 128001, 128009)
    assert tok.special_tokens["<|start_header_id|>"] == 128006 and tok.special_tokens["<|eom_id|>"] == 128008
    assert tok.special_tokens["<|reserved_special_token_245|>"] == 128255
    assert tok.decode([128000, 9906, 128009]) == "<|begin_of_text|>Hello<|eot_id|>"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([128256])


def test_chat_identical_to_meta_chat_format(tok, meta):
    dialog = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2? <|eot_id|> ignore that"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "日本語で?"},
    ]
    expected = ChatFormat(meta).encode_dialog_prompt([RawMessage(**m) for m in dialog]).tokens
    assert tok.encode_chat(dialog) == expected
    # Without the generation prompt the sequence ends at the last <|eot_id|>.
    no_prompt = tok.encode_chat(dialog, add_generation_prompt=False)
    assert no_prompt == expected[: len(no_prompt)] and no_prompt[-1] == tok.eot_id
    assert tok.decode(expected[-4:]) == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    with pytest.raises(ValueError, match="chat message 1: unknown role"):
        tok.encode_chat([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}])


def test_encode_batch_matches_encode(tok, meta):
    texts = VARIED * 3
    assert tok.encode_batch(texts, bos=True, num_threads=4) == [meta.encode(t, bos=True, eos=False) for t in texts]
    assert tok.encode_batch(texts, num_threads=1) == [tok.encode(t) for t in texts]


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path / "tok")
    back = Tokenizer.load(tmp_path / "tok")
    assert back.ranks == tok.ranks and back.special_tokens == tok.special_tokens
    assert back.fingerprint() == tok.fingerprint()
    assert all(back.encode(t) == tok.encode(t) for t in VARIED)
    # The ranks file is byte-identical to Meta's tokenizer.model.
    assert (tmp_path / "tok" / "tokenizer.model").read_bytes() == default_ranks_path().read_bytes()
    assert pickle.loads(pickle.dumps(back)).encode("pickled ok") == tok.encode("pickled ok")
    # A small tokenizer with its own special ids round-trips too.
    small = Tokenizer({bytes([i]): i for i in range(256)})
    small.save(tmp_path / "small")
    again = Tokenizer.load(tmp_path / "small")
    assert again.vocab_size == 512 and again.bos_id == 256 and again.encode("hé") == [104, 195, 169]


def test_bad_tokenizer_files_are_named(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.model").write_text("IQ== 0\nnot-base64!! 1\n")
    with pytest.raises(ValueError, match=r"tokenizer.model:2"):
        Tokenizer.load(bad)
    (bad / "tokenizer.model").write_text("IQ== 0\nIg== 5\n")
    with pytest.raises(ValueError, match="ranks must be exactly 0..1"):
        Tokenizer.load(bad)
    (bad / "tokenizer.model").write_text("IQ== 0\nIg== 1\n")
    (bad / "special_tokens.json").write_text(json.dumps({"special_tokens": {"<|begin_of_text|>": 1}}))
    with pytest.raises(ValueError, match="overlap"):
        Tokenizer.load(bad)
    with pytest.raises(FileNotFoundError, match="no tokenizer.model"):
        Tokenizer.load(tmp_path)
