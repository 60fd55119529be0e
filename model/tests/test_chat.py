import io

import pytest

from model.chat import ChatConfig, run
from model.checkpoint import save_model
from model.generate import generate
from model.llama import build
from model.presets import preset
from model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = Tokenizer({bytes([i]): i for i in range(256)})
    model = build(preset("tiny", n_layers=1, vocab_size=512, max_seq_len=256), seed=0)
    path = tmp_path_factory.mktemp("chat") / "ckpt"
    save_model(model, tok, path)
    return path, model.eval(), tok


def test_complete_streams_the_greedy_continuation(ckpt):
    path, model, tok = ckpt
    out = io.StringIO()
    (new,) = run(ChatConfig(ckpt=str(path), prompt="Hello", max_new_tokens=12), out=out)
    expected = generate(model, [tok.encode("Hello", bos=True)], max_new_tokens=12, stop_tokens=[tok.eos_id])[0]
    assert new == expected
    assert out.getvalue() == tok.decode(expected) + "\n"


def test_chat_reads_turns_and_keeps_history(ckpt):
    path, model, tok = ckpt
    cfg = ChatConfig(ckpt=str(path), mode="chat", system="Be brief.", max_new_tokens=5, temperature=0.8, seed=3)
    replies = run(cfg, stdin=io.StringIO("hi\nand again\n\nnot read\n"), out=io.StringIO())
    assert len(replies) == 2
    first = tok.encode_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert (
        replies[0]
        == generate(model, [first], max_new_tokens=5, temperature=0.8, seed=3, stop_tokens=tok.stop_tokens)[0]
    )
