"""GSM8K and MATH in the chat format (0-shot chain of thought for post-trained models): the prompt ids are the chat
encoding with an open assistant header, generation stops at <|eot_id|>, and the existing graders score chat-style
replies; the default stays the base models' few-shot prompts."""

import pytest

from eval import grading, gsm8k, harness, hendrycks_math, run
from eval.equivalence import Judge
from model.dialog import encode_dialog
from model.tokenizer import Tokenizer

USER = "<|start_header_id|>user<|end_header_id|>\n\n"


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.llama3()


def chat_reply_gsm8k(item: gsm8k.Item) -> str:
    """How an instruct model answers: its own steps, then the instructed closing sentence. It restates the question
    after "Q:", the base prompt's stop string, which must not cut a chat reply (that ends at <|eot_id|>)."""
    steps = gsm8k.gold_as_output(item).removesuffix("\n\n").rsplit(" The answer is", 1)[0].strip()
    return f"Let's work through it.\n\nQ: {item.question}\n\n{steps}\n\nThe answer is {item.answer}."


def chat_reply_math(item: hendrycks_math.Item) -> str:
    boxed = hendrycks_math.last_boxed(item.solution)  # after "Problem:", the base prompt's stop string
    return f"Problem: {item.problem}\n\n## Step 1\n{item.solution}\n\nThe final answer is $\\boxed{{{boxed}}}$."


class ChatModel:
    """Answers chat prompts from the dataset (a perfect instruct model behind the generate-like interface); records
    the prompts and stop tokens it was given. wrong=True answers the next item's question instead."""

    def __init__(self, tok, wrong: bool = False):
        self.tok, self.prompts, self.stop_tokens = tok, [], set()
        gsm, math = gsm8k.load(), hendrycks_math.load()
        shift = 1 if wrong else 0
        self.answers = {it.question: chat_reply_gsm8k(gsm[(i + shift) % len(gsm)]) for i, it in enumerate(gsm)}
        self.answers |= {it.problem: chat_reply_math(math[(i + shift) % len(math)]) for i, it in enumerate(math)}

    def __call__(self, prompts, *, max_new_tokens, stop_tokens=()):
        self.prompts += prompts
        self.stop_tokens |= set(stop_tokens)
        outs = []
        for p in prompts:
            user = self.tok.decode(p).rsplit(USER, 1)[1]
            question = user.split("<|eot_id|>")[0].rsplit("\n\n", 1)[0]
            outs.append(self.tok.encode(self.answers[question])[:max_new_tokens])
        return outs


def chat_cfg(**kw):
    return harness.EvalConfig(tasks=["gsm8k", "math500"], limit=5, batch_size=2, progress=False, format="chat", **kw)


def test_chat_prompts_are_the_dialog_encoding_with_an_open_assistant_header(tok, tmp_path):
    model = ChatModel(tok)
    harness.evaluate(model, tok, chat_cfg(), tmp_path, max_seq_len=4096)
    items = gsm8k.load()[:5] + hendrycks_math.load()[:5]
    messages = [gsm8k.chat_messages(it.question) for it in items[:5]]
    messages += [hendrycks_math.chat_messages(it.problem) for it in items[5:]]
    assert len(model.prompts) == 10
    header = tok.encode_header("assistant")
    for msgs in messages:
        # encode_dialog of the dialog with a reply, cut where the reply starts: the prompt the model continues.
        reply = "Some reasoning. The answer is 1."
        ids, _ = encode_dialog(tok, [*msgs, {"role": "assistant", "content": reply}])
        expected = ids[: -(len(tok.encode(reply)) + 1)]
        assert expected[-len(header) :] == header
        assert expected in model.prompts
    # One user turn: the question, then the instruction to reason step by step and end in the graded form.
    assert messages[0] == [{"role": "user", "content": f"{items[0].question}\n\n{gsm8k.CHAT_INSTRUCTION}"}]
    assert "The answer is N." in gsm8k.CHAT_INSTRUCTION and "\\boxed{X}" in hendrycks_math.CHAT_INSTRUCTION
    assert tok.eot_id in model.stop_tokens  # generation ends at the end of the assistant turn


def test_chat_replies_are_graded_by_the_existing_graders(tok, tmp_path):
    res = harness.evaluate(ChatModel(tok), tok, chat_cfg(), tmp_path / "right", max_seq_len=4096)
    t = res["tasks"]
    assert t["gsm8k"]["summary"]["strict_match"]["accuracy"] == 1.0
    assert t["gsm8k"]["summary"]["flexible_match"]["accuracy"] == 1.0
    assert t["math500"]["summary"]["accuracy"]["accuracy"] == 1.0
    assert t["gsm8k"]["predictions"][0]["output"].startswith("Let's work through it.")
    res = harness.evaluate(ChatModel(tok, wrong=True), tok, chat_cfg(), tmp_path / "wrong", max_seq_len=4096)
    assert res["tasks"]["gsm8k"]["summary"]["strict_match"]["accuracy"] == 0.0
    assert res["tasks"]["math500"]["summary"]["accuracy"]["accuracy"] == 0.0
    # The graders directly, on replies in the instructed forms.
    assert gsm8k.grade("12 - 4 = 8 apples are left.\n\nThe answer is 8.", "8")["strict_match"] == 1.0
    item = hendrycks_math.load()[0]
    reply = "First, ...\n\nThe final answer is $\\boxed{\\frac{1}{2}}$."
    with Judge(workers=1) as judge:
        (rec,) = grading.grade_math([item], [reply.replace("\\frac{1}{2}", item.answer)], judge)
    assert rec["correct"] == 1.0 and rec["extracted"] == item.answer


def test_the_default_stays_the_base_few_shot_format(tok, tmp_path):
    assert harness.EvalConfig().format == "base"
    seen = []

    def base(prompts, *, max_new_tokens, stop_tokens=()):
        seen.extend(prompts)
        return [tok.encode(" The answer is 1.") for _ in prompts]

    cfg = harness.EvalConfig(tasks=["gsm8k"], limit=2, progress=False)
    harness.evaluate(base, tok, cfg, tmp_path, max_seq_len=4096)
    item = gsm8k.load()[0]
    assert tok.encode(gsm8k.prompt(item.question, 8), bos=True) in seen
    with pytest.raises(ValueError, match="format must be one of base, chat"):
        harness.Harness(base, tok, harness.EvalConfig(format="instruct"), tmp_path)
    with pytest.raises(ValueError, match="format=chat is 0-shot"):
        bad = harness.EvalConfig(format="chat")
        bad.gsm8k.n_shot = 8
        harness.Harness(base, tok, bad, tmp_path)
    with pytest.raises(ValueError, match="format must be one of"):
        run.main([f"checkpoint={tmp_path}", "format=plain"])
