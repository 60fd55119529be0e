"""Long-context stages: growing sequence length and RoPE theta, gates that pass, and gates designed to fail."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from training import gates, long_context, pretrain
from training.long_context import GateFailed
from training.tests.helpers import byte_tokenizer, micro_recipe, text_shards
from training.trainer import checkpoint_args

STAGES = "long_context.stages=[{seq_len: 384, tokens: 1536, batch_tokens: 768}, " \
         "{seq_len: 512, tokens: 2048, batch_tokens: 1024, rope_theta: 1000000.0}]"  # fmt: skip
LC = ("long_context.train.optim.lr=0.003", "long_context.train.lr.schedule=constant",
      "long_context.train.data.mix={general: 0.6, math: 0.25, multilingual: 0.15}",
      "long_context.train.valid_batches=1", "long_context.train.valid_rows=2",
      "long_context.gate.n=2", "long_context.gate.fn=passkey", "long_context.gate.short_seq_len=32")  # fmt: skip


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lc")
    shards = text_shards(root / "shards", chars=60_000)
    pretrain.run(micro_recipe(), root / "pretrain", shards)
    return root, shards


def test_stages_grow_the_context_and_pass_their_gates(pretrained):
    root, shards = pretrained
    recipe = micro_recipe(STAGES, *LC, "long_context.gate.threshold=0.0", "long_context.gate.loss_tolerance=1.0")
    summary = long_context.run(recipe, root / "lc_pass", shards, init_from=root / "pretrain")
    stages = summary["stages"]
    assert [s["stage"] for s in stages] == ["stage1_384", "stage2_512"]
    assert [s["tokens"] for s in stages] == [1536, 2048] and all(s["gate"]["passed"] for s in stages)
    for s in stages:
        assert 0.0 <= s["gate"]["accuracy"] <= 1.0 and s["gate"]["pre_loss"] > 0 and s["gate"]["loss"] > 0
    # Each stage starts from the previous one and carries its sequence length and RoPE theta.
    first = checkpoint_args(root / "lc_pass/stage1_384")
    second = checkpoint_args(root / "lc_pass/stage2_512")
    assert (first.max_seq_len, first.rope_theta) == (384, 500000.0)
    assert (second.max_seq_len, second.rope_theta) == (512, 1e6)
    records = [json.loads(x) for x in (root / "lc_pass/metrics.jsonl").read_text().splitlines()]
    assert {r["seq_len"] for r in records if r.get("phase") == "long_context/stage2_512" and "loss" in r
            and "event" not in r} == {512}  # fmt: skip
    assert [r["stage"] for r in records if r.get("event") == "gate"] == ["stage1_384", "stage2_512"]
    assert (root / "lc_pass/plots/long_context_stage2_512.png").stat().st_size > 1000
    assert (root / "lc_pass/stage2_512/model/model.safetensors").is_file()
    again = long_context.run(recipe, root / "lc_pass", shards, init_from=root / "pretrain")  # done: skipped
    assert [s["tokens"] for s in again["stages"]] == [1536, 2048]


def test_a_stage_that_cannot_pass_trains_its_extra_budget_then_fails_loudly(pretrained):
    root, shards = pretrained
    recipe = micro_recipe(STAGES, *LC, "long_context.gate.threshold=1.0", "long_context.gate.max_extra=1",
                          "long_context.gate.extra_tokens=768")  # fmt: skip
    with pytest.raises(GateFailed) as failed:
        long_context.run(recipe, root / "lc_fail", shards, init_from=root / "pretrain")
    message = str(failed.value)
    assert "stage 1 (stage1_384)" in message and "after 1 extra segment(s) of 768 tokens" in message
    assert "retrieval accuracy 0.000 < threshold 1.0" in message
    state = json.loads((root / "lc_fail/stage1_384/gate.json").read_text())
    assert [g["tokens"] for g in state["gates"]] == [1536, 1536 + 768]  # trained the extra segment
    assert not any(g["passed"] for g in state["gates"]) and state["extensions"] == 1
    assert not (root / "lc_fail/stage1_384/DONE.json").exists()


def test_a_short_context_regression_fails_the_gate(pretrained):
    root, shards = pretrained
    # An always-passing retrieval gate, and a loss tolerance no stage can meet (the loss would have to halve).
    recipe = micro_recipe(STAGES, *LC, "long_context.gate.fn=training.tests.test_long_context:perfect",
                          "long_context.gate.loss_tolerance=-0.5", "long_context.gate.max_extra=0")  # fmt: skip
    with pytest.raises(GateFailed, match=r"short-context \(32\) valid loss .* \(pre-stage .* \+ -50.0%\)"):
        long_context.run(recipe, root / "lc_loss", shards, init_from=root / "pretrain")


def perfect(model, tokenizer, seq_len, *, n, seed) -> float:
    return 1.0


class Oracle(nn.Module):
    """Reads the prompt like a perfect model would: answers the key after the question (or reversed)."""

    def __init__(self, tokenizer, reverse: bool = False):
        super().__init__()
        self.tok, self.reverse = tokenizer, reverse
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*tokens.shape, self.tok.vocab_size)
        for b, row in enumerate(tokens.tolist()):
            text = self.tok.decode(row)
            key = text.split("The pass key is ")[1][:5]
            answer = " " + (key[::-1] if self.reverse else key) + "."
            done = len(text) - text.rindex("The pass key is") - len("The pass key is")
            logits[b, -1, self.tok.encode(answer[min(done, len(answer) - 1)])[0]] = 1.0
        return logits


def test_passkey_prompts_and_scoring():
    tok = byte_tokenizer()
    prompts, keys = gates.passkey_prompts(tok, 600, n=4, seed=3)
    assert all(len(p) == 600 - gates.ANSWER_TOKENS for p in prompts) and len(set(keys)) == 4
    depths = [tok.decode(p).index(f"pass key is {k}") for p, k in zip(prompts, keys)]
    assert depths == sorted(depths) and depths[-1] - depths[0] > 250  # spread from shallow to deep
    assert gates.passkey(Oracle(tok), tok, 600, n=4, seed=3) == 1.0
    assert gates.passkey(Oracle(tok, reverse=True), tok, 600, n=4, seed=3) == 0.0
    with pytest.raises(ValueError, match="too short"):
        gates.passkey_prompts(tok, 100, n=1, seed=0)
    assert gates.resolve("passkey") is gates.passkey
    assert gates.resolve("training.tests.test_long_context:perfect") is perfect
    with pytest.raises(ValueError, match="has no function 'nope'"):
        gates.resolve("training.gates:nope")
