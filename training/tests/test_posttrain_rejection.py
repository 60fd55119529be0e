"""Rejection sampling on a tiny random policy whose output head only allows a few letters and <|eot_id|> (so samples
are short, finish, and re-encode as chat text): the best kept is the scorer's argmax, the samples are
generate(samples=k)'s, verifier and reward scorers, SFT and preference records round-trip through JSONL, the system
prompt, seeded determinism."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from data.dialogs import read_dialogs, read_preferences, write_jsonl
from model.generate import generate
from model.llama import build
from model.presets import preset
from training.posttrain.rejection_sampling import (
    RejectionSamplingConfig,
    Scored,
    rejection_sample,
    reward_scorer,
    to_preferences,
    to_sft,
    verifier_scorer,
)
from training.posttrain.reward import RewardModel
from training.sample_shards import byte_tokenizer

TOK = byte_tokenizer()
ALLOWED = "abc "
PROMPTS = [
    [{"role": "user", "content": "Say a, b or c."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Letters?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "ab"}, {"role": "user", "content": "More"}],
]


def args():
    return preset("tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=TOK.vocab_size,
                  max_seq_len=256)  # fmt: skip


@pytest.fixture(scope="module")
def policy():
    torch.set_num_threads(1)
    model = build(args(), seed=0)
    # An output head with a bias: -1e4 on every token but a few letters and <|eot_id|> (mean length ~4 tokens).
    head = nn.Linear(model.args.dim, model.args.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.output.weight)
        head.bias.fill_(-1e4)
        head.bias[[*ALLOWED.encode(), TOK.eot_id]] = 0.0
    model.output = head
    return model.eval()


def cfg(**kw):
    return RejectionSamplingConfig(**{"k": 6, "max_new_tokens": 24, "batch_prompts": 2, "seed": 3, **kw})


def count_a(prompt, responses):
    return [float(r.count("a")) - 0.01 * len(r) for r in responses]


def test_best_is_the_argmax_of_the_scorer_and_samples_are_generates(policy):
    c = cfg()
    scored, stats = rejection_sample(policy, TOK, PROMPTS, count_a, c)
    assert stats["prompts"] == 3 and stats["samples"] == 18 and stats["samples_per_s"] > 0
    kept = sum(len(s.responses) for s in scored)
    assert kept + sum(v for k, v in stats["dropped"].items() if k != "no response") == 18
    assert len(scored) + stats["dropped"].get("no response", 0) == 3
    for s in scored:
        assert s.scores == count_a(s.prompt, s.responses)
        assert s.scores[s.best] == max(s.scores) and s.best == s.scores.index(max(s.scores))
        assert all(set(r) <= set(ALLOWED) and r.strip() for r in s.responses)
    assert stats["mean_best_score"] == pytest.approx(sum(max(s.scores) for s in scored) / len(scored))
    assert stats["mean_score"] == pytest.approx(sum(sum(s.scores) for s in scored) / kept)
    # The candidates are generate(samples=k)'s finished samples of each chunk of batch_prompts prompts.
    out = generate(policy, [TOK.encode_chat(p) for p in PROMPTS[:2]], max_new_tokens=24, temperature=0.7,
                   top_p=0.9, stop_tokens=[TOK.eot_id], seed=3, samples=6)  # fmt: skip
    first = [TOK.decode(ids) for ids in out[:6] if len(ids) < 24 and TOK.decode(ids).strip()]
    assert scored[0].prompt == PROMPTS[0] and scored[0].responses == first
    # SFT data: the prompt and its best response.
    dialogs = to_sft(scored, round=2)
    assert [d.messages for d in dialogs] == [[*s.prompt, {"role": "assistant", "content": s.responses[s.best]}]
                                             for s in scored]  # fmt: skip
    assert all(d.round == 2 and d.source == "rejection_sampling" for d in dialogs)


def test_verifier_scorer_and_preferences(policy):
    def has_b(prompt, response):  # "Letters?" accepts anything: its scores tie
        return prompt[-1]["content"] == "Letters?" or "b" in response

    scored, stats = rejection_sample(policy, TOK, PROMPTS, verifier_scorer(has_b), cfg(k=8))
    assert len(scored) == 3
    for s in scored:
        assert s.scores == [1.0 if has_b(s.prompt, r) else 0.0 for r in s.responses]
    prefs, skipped = to_preferences(scored, round=1)
    assert skipped.get("tie", 0) >= 1 and len(prefs) + sum(skipped.values()) == 3
    for p in prefs:
        assert "b" in p.chosen and "b" not in p.rejected and p.strength == "significantly_better" and p.round == 1
    assert to_preferences(scored, round=1, significant_gap=2.0)[0] == [replace(p, strength="better") for p in prefs]
    assert to_preferences(scored, round=1, min_gap=1.5)[0] == []


def test_preference_rules_by_hand():
    prompt = [{"role": "user", "content": "q"}]
    scored = [
        Scored(prompt, ["good", "bad", "ok"], [2.5, -1.0, 0.0], 0),
        Scored(prompt, ["x", "y"], [0.5, 0.5], 0),
        Scored(prompt, ["only"], [1.0], 0),
        Scored(prompt, ["same", "same"], [0.3, 0.2], 0),
        Scored(prompt, ["hi", "lo"], [0.4, 0.0], 0),
    ]
    prefs, skipped = to_preferences(scored, round=0)
    assert [(p.chosen, p.rejected, p.strength) for p in prefs] == [("good", "bad", "significantly_better"),
                                                                   ("hi", "lo", "better")]  # fmt: skip
    assert skipped == {"tie": 1, "one response": 1, "same text": 1}
    prefs, skipped = to_preferences(scored, round=0, min_gap=0.5)
    assert [p.chosen for p in prefs] == ["good"]
    assert skipped == {"tie": 1, "one response": 1, "same text": 1, "gap below min_gap": 1}


def test_reward_scorer_scores_each_response_as_alone(policy):
    rm = RewardModel(build(args(), seed=1)).eval()
    with torch.no_grad():
        rm.head.weight.mul_(1000.0)  # visible differences at initialisation
    prompt = PROMPTS[1]
    responses = ["a", "abc cab", "b b", "cc"]
    got = reward_scorer(rm, TOK)(prompt, responses)
    assert reward_scorer(rm, TOK, batch=3)(prompt, responses) == pytest.approx(got, rel=1e-4, abs=1e-4)
    for r, g in zip(responses, got):
        ids = TOK.encode_chat([*prompt, {"role": "assistant", "content": r}], add_generation_prompt=False)
        with torch.no_grad():
            alone = rm(torch.tensor([ids]), None, torch.tensor([len(ids) - 1])).item()
        assert g == pytest.approx(alone, rel=1e-4, abs=1e-4)
    scored, _ = rejection_sample(policy, TOK, PROMPTS, reward_scorer(rm, TOK), cfg())
    assert all(s.scores[s.best] == max(s.scores) for s in scored)


def test_records_round_trip_through_jsonl(policy, tmp_path):
    scored, _ = rejection_sample(policy, TOK, PROMPTS, count_a, cfg(k=8))
    dialogs = to_sft(scored, round=3)
    prefs, _ = to_preferences(scored, round=3)
    assert dialogs and prefs
    write_jsonl(tmp_path / "sft.jsonl", dialogs)
    write_jsonl(tmp_path / "prefs.jsonl", prefs)
    assert read_dialogs(tmp_path / "sft.jsonl").records == dialogs
    assert read_preferences(tmp_path / "prefs.jsonl").records == prefs


def test_system_prompt_is_inserted_where_missing(policy):
    system = "Answer with letters only."
    scored, _ = rejection_sample(policy, TOK, PROMPTS, count_a, cfg(system_prompt=system, batch_prompts=3))
    assert [s.prompt for s in scored] == [[{"role": "system", "content": system}, *PROMPTS[0]], PROMPTS[1],
                                          [{"role": "system", "content": system}, *PROMPTS[2]]]  # fmt: skip
    # The policy saw it: the samples are those of the prompt written with the system message.
    out = generate(policy, [TOK.encode_chat(s.prompt) for s in scored], max_new_tokens=24, temperature=0.7,
                   top_p=0.9, stop_tokens=[TOK.eot_id], seed=3, samples=6)  # fmt: skip
    assert scored[2].responses == [TOK.decode(ids) for ids in out[12:] if len(ids) < 24 and TOK.decode(ids).strip()]
    assert to_sft(scored, round=1)[0].messages[0] == {"role": "system", "content": system}
    with pytest.raises(ValueError, match="must end with a user turn"):
        rejection_sample(policy, TOK, [PROMPTS[2][:2]], count_a, cfg())


def test_seeded_runs_are_identical(policy):
    a, _ = rejection_sample(policy, TOK, PROMPTS, count_a, cfg())
    b, _ = rejection_sample(policy, TOK, PROMPTS, count_a, cfg())
    c, _ = rejection_sample(policy, TOK, PROMPTS, count_a, cfg(seed=4))
    assert a == b and a != c
