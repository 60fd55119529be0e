"""SFT curation (data/posttrain/sft_curation.py, scorers.py): every malformed record counted with its reason,
cleaning, apology rebalancing, topic/quality/difficulty scorers behind one interface, the funnel and the CLI."""

from __future__ import annotations

import json
import math

import pytest

from data.dialogs import Dialog, read_dialogs
from data.posttrain import scorers
from data.posttrain.scorers import ScorerConfig, keyword_topic, make_scorer, register, run_scorer
from data.posttrain.sft_curation import SFTCurationConfig, curate, main
from tools.config import load
from tools.paths import PACKAGE_ROOT


def line(user: str, answer: str, system: str = "") -> str:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
    return json.dumps({"messages": msgs})


def run(tmp_path, lines: list[str | bytes], steps: list[str], *overrides: str):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    cfg = load(
        SFTCurationConfig, [], [f"input={path}", f"output={tmp_path / 'out.jsonl'}", f"steps={steps}", *overrides]
    )
    items, stats = curate(cfg)
    assert stats["funnel_ok"], stats["funnel_errors"]
    return items, stats


def length_reward(dialogs: list[Dialog]) -> list[float]:
    """A stand-in reward model loaded by module:function (as training/'s RM would be)."""
    return [float(len(d.messages[-1]["content"])) for d in dialogs]


def test_malformed_records_are_counted_by_reason_and_never_crash(tmp_path):
    ok = line("What is 2 + 2?", "2 + 2 = 4. The answer is 4.")
    bad = [
        ok,
        '{"messages": [{"role": "user", "content": "hi"}]}',  # no assistant turn
        '{"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}',  # role missing
        '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, '
        '{"role": "assistant", "content": "c"}]}',  # two user turns in a row
        '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}, '
        '{"role": "assistant", "content": "c"}]}',  # starts with the assistant
        '{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "c"}]}',  # empty user
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}',  # empty answer
        '{"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]}',
        '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]}',
        '{"messages": [], "extra": 1}',
        "{not json",
        "[" * 3000,  # nested past the recursion limit
        b'{"messages": "\xff\xfe"}',
        b'{"messages": "' + b"x" * 5000 + b'"}',  # over read.max_line_bytes=4000
        "",  # blank lines are not records
        ok,
    ]
    items, stats = run(tmp_path, bad, ["read"], "read.max_line_bytes=4000")
    assert len(items) == 2 and stats["dialogs_in"] == 15
    assert stats["dropped_by_reason"] == {
        "bad first role": 1,
        "bad last role": 1,
        "bad type": 1,
        "empty content": 1,
        "empty response": 1,
        "line too long": 1,
        "missing field": 1,
        "not JSON": 2,
        "not UTF-8": 1,
        "unknown field": 1,
        "unknown role": 1,
        "wrong role order": 1,
    }
    read = stats["steps"]["read"]
    assert read["docs_in"] == read["docs_out"] + sum(read["dropped"].values())
    assert [d["id"] for d in stats["dropped"]][:2] == ["in.jsonl:2", "in.jsonl:3"]
    assert items[1].id == "in.jsonl:16"  # ids are 1-based line numbers, blank lines included


def test_clean_removes_excessive_emojis_and_exclamations(tmp_path):
    lines = [
        line("Say hi", "Hi!!! Great to see you 😀😀😀 today!"),
        line("Say hi", "Hi 😀 there."),  # one emoji: under max_emojis, kept
        line("Say hi", "😀😀😀"),  # nothing left
        line("Compare", "Wow! Use `a != b` or `!flag`, never ![x](y)!!"),  # code and markdown untouched
    ]
    items, stats = run(tmp_path, lines, ["read", "clean"])
    assert [it.dialog.messages[1]["content"] for it in items] == [
        "Hi! Great to see you today.",
        "Hi 😀 there.",
        "Wow! Use `a != b` or `!flag`, never ![x](y).",
    ]
    st = stats["steps"]["clean"]
    assert st["dropped"] == {"empty after cleaning": 1}
    assert st["counters"] == {
        "emojis removed": 6,
        "exclamation marks removed or replaced": 5,
        "responses changed": 3,
    }


def test_apologies_are_rebalanced_to_the_target_share_not_removed(tmp_path):
    plain = [line(f"Question {i}?", f"Answer number {i}.") for i in range(80)]
    sorry = [line(f"Other {i}?", f"I'm sorry, I cannot say {i}.") for i in range(15)]
    sorry += [line(f"More {i}?", f"I apologize for the confusion {i}.") for i in range(5)]
    items, stats = run(tmp_path, plain + sorry, ["read", "apologies"], "apologies.target_share=0.05")
    apologetic = [
        it
        for it in items
        if "sorry" in it.dialog.messages[1]["content"] or "apolog" in it.dialog.messages[1]["content"]
    ]
    assert len(items) == 84 and len(apologetic) == 4  # 4 / 84 <= 5% < 5 / 85
    assert stats["steps"]["apologies"]["counters"] == {"apologetic in": 20, "apologetic kept": 4}
    assert stats["dropped_by_reason"] == {"apologetic over target share": 16}
    again, _ = run(tmp_path, plain + sorry, ["read", "apologies"], "apologies.target_share=0.05")
    assert [it.id for it in again] == [it.id for it in items]  # deterministic
    items, _ = run(tmp_path, plain + sorry, ["read", "apologies"], "apologies.target_share=0.5")
    assert len(items) == 100  # under the target: nothing removed


def test_topic_coarse_and_fine_and_keep(tmp_path):
    assert keyword_topic(
        [
            Dialog(
                [
                    {"role": "user", "content": "Find the area of a triangle with angle 30"},
                    {"role": "assistant", "content": "x"},
                ]
            ),
            Dialog(
                [{"role": "user", "content": "Fix this Python traceback error"}, {"role": "assistant", "content": "x"}]
            ),
            Dialog([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "x"}]),
        ]
    ) == ["mathematical reasoning/geometry and trigonometry", "coding/debugging", "general/other"]
    lines = [line("What is the probability of two dice summing to 7?", "1/6."), line("Write a poem", "Roses.")]
    items, stats = run(tmp_path, lines, ["read", "topic"], "topic.keep=[mathematical reasoning]")
    assert [it.meta["topic"] for it in items] == ["mathematical reasoning/probability and statistics"]
    assert stats["dropped_by_reason"] == {"topic not kept": 1}
    assert stats["steps"]["topic"]["counters"]["coarse: writing"] == 1


def test_quality_is_top_reward_quartile_or_maximum_judge(tmp_path):
    # 8 dialogs with growing answers: the reward (answer length) puts the 2 longest in the top quartile; the
    # rules judge gives the maximum (5) to complete answers of >= 8 words only: dialog 0 has one.
    answers = ["This complete answer has at least eight words in it."] + [
        f"Short {'x' * (60 + i)}" for i in range(1, 8)
    ]
    lines = [line("Explain it", a) for a in answers]
    reward = "quality.reward.name=data.tests.test_sft_curation:length_reward"
    items, stats = run(tmp_path, lines, ["read", "quality"], reward, "quality.drop_low=true")
    assert sorted(it.id for it in items) == ["in.jsonl:1", "in.jsonl:7", "in.jsonl:8"]
    assert stats["steps"]["quality"]["counters"] == {"high by judge": 1, "high by reward": 2, "high quality": 3}
    assert stats["dropped_by_reason"] == {"low quality": 5}
    assert all(it.meta["high_quality"] for it in items) and max(it.meta["quality"] for it in items) == 1.0


def test_difficulty_counts_intents_and_rates_three_points(tmp_path):
    lines = [
        line("Hi", "Hello there."),
        line("Explain recursion. Then write a Python function. What is its complexity?", "..."),
        line("Solve exactly step by step: 3 * 4 = ?", "12."),
    ]
    items, stats = run(tmp_path, lines, ["read", "difficulty"])
    assert [(it.meta["intents"], it.meta["rating"]) for it in items] == [(1.0, 1.0), (3.0, 2.0), (2.0, 2.0)]
    assert stats["steps"]["difficulty"]["counters"] == {"rating 1": 1, "rating 2": 2}


def test_scorer_interface_registry_and_errors():
    d = [Dialog([{"role": "user", "content": "q"}, {"role": "assistant", "content": "abc"}])]
    assert make_scorer(ScorerConfig(name="data.tests.test_sft_curation:length_reward"))(d) == [3.0]
    register("constant", lambda cfg: lambda dialogs: [0.5] * len(dialogs))
    try:
        assert run_scorer(make_scorer(ScorerConfig(name="constant")), d, "constant", float) == [0.5]
    finally:
        del scorers.SCORERS["constant"]
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        make_scorer(ScorerConfig(name="nope"))
    with pytest.raises(ValueError, match="cannot be loaded"):
        make_scorer(ScorerConfig(name="data.no_such_module:f"))
    with pytest.raises(ValueError, match="returned 2 values for 1 dialogs"):
        run_scorer(lambda dialogs: [1.0, 2.0], d, "two", float)
    with pytest.raises(ValueError, match="must return strings"):
        run_scorer(lambda dialogs: [1.0], d, "topic", str)
    with pytest.raises(ValueError, match="needs ckpt"):
        make_scorer(ScorerConfig(name="model_loglik"))


def test_model_loglik_scorer_with_the_projects_model(tmp_path):
    from model.checkpoint import save_model
    from model.llama import build
    from model.presets import preset
    from model.tokenizer import Tokenizer

    tok = Tokenizer({bytes([i]): i for i in range(256)})
    save_model(
        build(preset("tiny", n_layers=1, dim=64, n_heads=4, n_kv_heads=2, vocab_size=512), seed=0), tok, tmp_path / "m"
    )
    dialogs = [
        Dialog([{"role": "user", "content": "Add 2 and 3"}, {"role": "assistant", "content": "5"}]),
        Dialog([{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue, or red."}]),
    ]
    scores = make_scorer(ScorerConfig(name="model_loglik", ckpt=str(tmp_path / "m")))(dialogs)
    # An untrained model over 512 tokens: mean log-probability near -log(512).
    assert all(abs(s + math.log(512)) < 1.5 for s in scores)
    labels = ["maths", "colours"]
    topics = make_scorer(ScorerConfig(name="model_loglik", ckpt=str(tmp_path / "m"), labels=labels))(dialogs)
    assert all(t in labels for t in topics)


def test_cli_composition_writes_kept_dialogs_stats_and_dropped(tmp_path, capsys):
    lines = [
        line(f"Tell me about item {i}, the {w} one?", f"Item {i} is {w} and useful.")
        for i, w in enumerate(["red", "green", "blue"])
    ]
    lines += [lines[0], "{broken"]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "kept.jsonl"
    assert main([f"input={src}", f"output={out}", f"config={PACKAGE_ROOT / 'data/posttrain/configs/sft.yaml'}"]) == 0
    kept = read_dialogs(out).records
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["funnel_ok"] and stats["dialogs_in"] == 5 and len(kept) == stats["dialogs_kept"] == 3
    assert stats["dropped_by_reason"] == {"not JSON": 1, "semantic near-duplicate": 1}
    dropped = [json.loads(x) for x in out.with_suffix(".dropped.jsonl").read_text().splitlines()]
    assert dropped[-1]["detail"].startswith("in.jsonl:1 cos 1.0")
    annotations = [json.loads(x) for x in out.with_suffix(".annotations.jsonl").read_text().splitlines()]
    assert [a["id"] for a in annotations] == ["in.jsonl:1", "in.jsonl:2", "in.jsonl:3"]  # a tie: the first copy stays
    assert {"topic", "quality", "high_quality", "intents", "rating", "difficulty"} < set(annotations[0])
    assert "5 dialogs in, 3 kept" in capsys.readouterr().out
    assert main([f"input={tmp_path / 'missing.jsonl'}", f"output={out}"]) == 2
    assert main([f"input={src}", f"output={out}", "steps=[read,sort]"]) == 2
    assert "unknown or repeated ['sort']" in capsys.readouterr().err
