"""The chat template of an exported Hugging Face checkpoint: transformers' apply_chat_template gives exactly herd's
chat ids (model.dialog), and the chat CLI talks to a post-trained model exported that way."""

import io
import json

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer as HFTokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from model.chat import ChatConfig, run
from model.convert import write_checkpoint
from model.dialog import encode_dialog
from model.interop import hf_tokenizer_files
from model.llama import build
from model.presets import preset
from model.tokenizer import Tokenizer

SYSTEM = {"role": "system", "content": "You are terse. Answer in one line."}
DIALOGS = [
    [SYSTEM, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "And 3+3?  Show it:\n3+3"}, {"role": "assistant", "content": "Six, i.e. 6. "}],
    [{"role": "system", "content": "Tu réponds en français ; les nombres en chiffres."},
     {"role": "user", "content": "Combien font 12 × 12 ?"}, {"role": "assistant", "content": "144 — facile."},
     {"role": "user", "content": "Et 1000/8 ?\n\nMerci."}, {"role": "assistant", "content": "125\n"},
     {"role": "user", "content": "def f(x):\n    return x  # abcab"}, {"role": "assistant", "content": "ok  \t"}],
]  # fmt: skip
# Tool results: the chat format's ipython role (Tokenizer.encode_chat; training dialogs have no tool turns yet).
TOOL = [{"role": "user", "content": "call the tool"}, {"role": "assistant", "content": "<calc>2*3</calc>"},
        {"role": "tool", "content": "6"}, {"role": "assistant", "content": "It is 6."}]  # fmt: skip


@pytest.fixture(scope="module", params=["bytes+merges", "llama3"])
def export(request, tmp_path_factory):
    if request.param == "llama3":
        tok = Tokenizer.llama3()
        args = preset("tiny", dim=32, n_layers=1, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=tok.vocab_size)
    else:
        tok = Tokenizer({bytes([i]): i for i in range(256)} | {b"ab": 256, b"abc": 257})
        args = preset("tiny", dim=32, n_layers=1, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=tok.vocab_size)
    path = tmp_path_factory.mktemp("export") / "hf"
    write_checkpoint(args, build(args, seed=0).state_dict(), tok, path, "hf")
    return tok, AutoTokenizer.from_pretrained(path), path


def ids(out) -> list[int]:
    """apply_chat_template returns a BatchEncoding in transformers 5 (a plain list in older ones)."""
    return list(out["input_ids"]) if hasattr(out, "keys") else list(out)


def test_the_exported_template_gives_herds_dialog_ids(export):
    tok, hf, path = export
    assert "chat_template" in json.loads((path / "tokenizer_config.json").read_text())
    for dialog in DIALOGS:
        assert ids(hf.apply_chat_template(dialog, tokenize=True)) == encode_dialog(tok, dialog)[0]
        for end in range(1, len(dialog)):  # every prefix that ends in a user or tool turn, with the open header
            if dialog[end]["role"] == "assistant":
                prompt = ids(hf.apply_chat_template(dialog[:end], tokenize=True, add_generation_prompt=True))
                assert prompt == tok.encode_chat(dialog[:end])
                full = encode_dialog(tok, dialog[: end + 1])[0]
                reply = tok.encode(dialog[end]["content"]) + [tok.eot_id]
                assert full[: len(prompt)] == prompt and full[len(prompt) :] == reply
    assert ids(hf.apply_chat_template(TOOL)) == tok.encode_chat(TOOL, add_generation_prompt=False)
    assert ids(hf.apply_chat_template(TOOL[:3], add_generation_prompt=True)) == tok.encode_chat(TOOL[:3])


def test_the_documented_limits_of_the_template():
    # Checked on the Llama 3 tokenizer, which has merges across the header's "\n\n" and inside "<|eot_id|>" text.
    tok = Tokenizer.llama3()
    files = hf_tokenizer_files(tok, 256)
    hf = PreTrainedTokenizerFast(tokenizer_object=HFTokenizer.from_str(files["tokenizer.json"].decode()))
    template = json.loads(files["tokenizer_config.json"])["chat_template"]
    for content in ("\nHello", "Say <|eot_id|> now"):
        dialog = [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]
        assert ids(hf.apply_chat_template(dialog, chat_template=template)) != encode_dialog(tok, dialog)[0]


def test_the_chat_cli_talks_to_a_post_trained_hf_export(tmp_path):
    """SFT a tiny model on one dialog (cross-entropy on the assistant tokens and their <|eot_id|>), export it as a
    Hugging Face directory, and chat with it: the reply is the trained answer, stopped at <|eot_id|>."""
    torch.manual_seed(0)
    tok = Tokenizer({bytes([i]): i for i in range(256)})
    args = preset("tiny", dim=64, n_layers=1, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=tok.vocab_size,
                  max_seq_len=128)  # fmt: skip
    model = build(args, seed=0)
    system, question, answer = "Be brief.", "Name a color.", "Blue."
    dialog = [{"role": "system", "content": system}, {"role": "user", "content": question},
              {"role": "assistant", "content": answer}]  # fmt: skip
    seq, mask = encode_dialog(tok, dialog)
    tokens = torch.tensor([seq])
    targets = torch.tensor([[t if m else -100 for t, m in zip(seq[1:], mask[1:])]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(tokens)[0, :-1], targets[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    write_checkpoint(args, model.state_dict(), tok, tmp_path / "hf", "hf")
    out = io.StringIO()
    cfg = ChatConfig(ckpt=str(tmp_path / "hf"), mode="chat", system=system, prompt=question, max_new_tokens=20)
    (reply,) = run(cfg, out=out)
    assert reply == tok.encode(answer)  # stopped at <|eot_id|>, which is not part of the reply
    assert out.getvalue() == answer + "\n"
    # The CLI's prompt is the exported template's.
    hf = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert ids(hf.apply_chat_template(dialog[:2], add_generation_prompt=True)) == tok.encode_chat(dialog[:2])
