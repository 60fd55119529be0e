import pytest

from model.dialog import encode_dialog, format_token_mask
from model.tokenizer import Tokenizer

DIALOG = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3? <|eot_id|>"},
    {"role": "assistant", "content": "Six, i.e. 6."},
]


@pytest.fixture(scope="module", params=["llama3", "bytes"])
def tok(request):
    return Tokenizer.llama3() if request.param == "llama3" else Tokenizer({bytes([i]): i for i in range(256)})


def masked_text(tok, ids, mask):
    return tok.decode([t for t, m in zip(ids, mask) if m])


def test_ids_equal_the_chat_format(tok):
    ids, mask = encode_dialog(tok, DIALOG)
    assert ids == tok.encode_chat(DIALOG, add_generation_prompt=False)
    assert len(mask) == len(ids)


def test_mask_is_exactly_the_assistant_content_and_its_eot(tok):
    ids, mask = encode_dialog(tok, DIALOG)
    assert masked_text(tok, ids, mask) == "4<|eot_id|>Six, i.e. 6.<|eot_id|>"
    # Position by position: the trained spans are the tokens of the assistant contents, each followed by eot.
    four, six = tok.encode("4"), tok.encode("Six, i.e. 6.")
    starts = [i for i in range(len(ids)) if mask[i] and not mask[i - 1]]
    assert len(starts) == 2
    assert ids[starts[0] : starts[0] + len(four) + 1] == four + [tok.eot_id]
    assert ids[starts[1] : starts[1] + len(six) + 1] == six + [tok.eot_id]
    assert sum(mask) == len(four) + len(six) + 2
    # The user's literal "<|eot_id|>" text is ordinary text and untrained; the real eot after it is untrained.
    assert not mask[0] and ids[-1] == tok.eot_id and mask[-1]


def test_last_assistant_only(tok):
    ids, mask = encode_dialog(tok, DIALOG, train_on="last_assistant")
    assert masked_text(tok, ids, mask) == "Six, i.e. 6.<|eot_id|>"
    with pytest.raises(ValueError, match="train_on"):
        encode_dialog(tok, DIALOG, train_on="everything")


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "no messages"),
        ([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}], "message 1: unknown role 'robot'"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}], "message 1: empty assistant"),
        ([{"role": "user", "content": "a"}], "message 0: .*must end with an assistant turn"),
        (DIALOG[1:3] + [{"role": "system", "content": "s"}] + DIALOG[3:], "message 2: a system message must be"),
        ([{"role": "user", "content": 3}, {"role": "assistant", "content": "b"}], "message 0: content must be str"),
        ([{"role": "user"}], "message 0: must be a dict"),
    ],
)
def test_bad_dialogs_name_the_message(tok, messages, match):
    with pytest.raises(ValueError, match=match):
        encode_dialog(tok, messages)


def test_format_tokens(tok):
    ids, _ = encode_dialog(tok, DIALOG)
    fmt = format_token_mask(ids, tok)
    # What is left is exactly the concatenated message contents, in order.
    assert tok.decode([t for t, f in zip(ids, fmt) if not f]) == "".join(m["content"] for m in DIALOG)
    # The formatting tokens: bos, and per message the header (start, role, end, "\n\n") and eot.
    header_len = {r: len(tok.encode_header(r)) for r in ("system", "user", "assistant")}
    assert sum(fmt) == 1 + sum(header_len[m["role"]] + 1 for m in DIALOG)
    assert fmt[0] and fmt[-1]
    # A content that itself begins with a blank line keeps it: only the header's own "\n\n" is formatting.
    ids, _ = encode_dialog(tok, [{"role": "user", "content": "\n\nq"}, {"role": "assistant", "content": "a"}])
    fmt = format_token_mask(ids, tok)
    assert tok.decode([t for t, f in zip(ids, fmt) if not f]) == "\n\nqa"
