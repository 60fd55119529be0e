"""The post-training stages on a small model in-process: two rounds with two DPO runs averaged and the no-NLL probe,
every record written and read back, data versioned per round, the reward model trained on all preferences so far,
DPO on the latest round's only, the average the mean of the runs, and a rerun that recomputes nothing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from data.synthetic_chat import BAD_PREFERENCES, MALFORMED, ChatTaskConfig, problems, sft_dialogs
from experiments import dag, posttrain
from experiments.config import ExperimentConfig
from experiments.dag import Stage, StageContext
from experiments.records import (
    AverageRecord,
    ChatDataRecord,
    DPORecord,
    RejectionSamplingRecord,
    RewardModelRecord,
    SFTRecord,
)
from training.posttrain.phase import PhaseConfig


@dataclass
class Config(ExperimentConfig):
    posttrain: posttrain.PosttrainConfig = field(default_factory=posttrain.PosttrainConfig)


def anneal(ctx: StageContext) -> dict:
    """A stand-in for the pre-trained model: a 2-layer model over a BPE trained on the task's own text."""
    from model.bpe import train_bpe
    from model.checkpoint import save_model
    from model.llama import build
    from model.presets import preset

    task = ctx.config.posttrain.task
    texts = [m["content"] for d in sft_dialogs(problems(task)[0]) for m in d.messages]
    tok = train_bpe(texts * 4, 600)
    args = preset("tiny", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, max_seq_len=256)
    save_model(build(args, seed=0), tok, ctx.workdir / "model")
    return {}


class InProcess:
    """Runs each stage's function in this process (a failure raises here, with its traceback)."""

    def run(self, stage: Stage, ctx: StageContext):
        return stage.fn(ctx)


def small() -> posttrain.PosttrainConfig:
    fast = PhaseConfig(lr=3e-3, steps=6, per_step=8, checkpoint_every=4, weight_decay=0.0)
    return posttrain.PosttrainConfig(
        rounds=2,
        runs=posttrain.RunsConfig(reward_model=2, sft=2, dpo=2),
        task=ChatTaskConfig(train=48, held_out=12),
        seq_len=128,
        sft=dataclasses.replace(fast, steps=60, per_step=4, checkpoint_every=30),
        reward_model=fast,
        dpo=posttrain.DPOConfig(train=dataclasses.replace(fast, lr=1e-3, per_step=4), nll_probe=True, probe_every=3),
        sampling=posttrain.SamplingConfig(k=4, max_new_tokens=24, batch_prompts=8, prompts=16),
        eval_max_new_tokens=24,
        threads=1,
    )


def test_two_rounds_run_version_their_data_and_resume_to_nothing(tmp_path):
    cfg = Config(posttrain=small())
    stages = [Stage("anneal", anneal), *posttrain.stages(cfg.posttrain)]
    ex = InProcess()
    result = dag.run(stages, tmp_path, cfg, ex, log=lambda *_: None)
    assert len(result.ran) == 3 + 5 * 2  # anneal, chat_data, round0/sft, five per round
    root = tmp_path / "stages"

    def rec(name, cls):
        return dag.StageContext(name, tmp_path, root, {name: root / name}, cfg).record(name, cls)

    for r in (1, 2):
        assert (root / f"round{r}/rejection_sampling/sft.jsonl").is_file()
        assert (root / f"round{r}/reward_model/head.safetensors").is_file()
        assert (root / f"round{r}/average/model/model.safetensors").is_file()
    rs1 = rec("round1/rejection_sampling", RejectionSamplingRecord)
    rs2 = rec("round2/rejection_sampling", RejectionSamplingRecord)
    assert 0.0 <= rs1.random_pick <= rs1.any_correct <= 1.0 and rs1.best_of_k <= rs1.any_correct
    # The reward model of round 2 trains on the annotated pairs plus round 1's; DPO on its own round's only.
    rm1, rm2 = rec("round1/reward_model", RewardModelRecord), rec("round2/reward_model", RewardModelRecord)
    assert rm2.preferences > rm1.preferences
    d1, d2 = rec("round1/dpo", DPORecord), rec("round2/dpo", DPORecord)
    assert d2.pairs <= rs2.preferences and d1.pairs <= rs1.preferences
    assert len(d1.runs) == 2 and d1.probe is not None and d1.probe.nll_coef == 0.0 and d2.probe is None
    assert d1.runs[0].steps == (0, 3, 6)
    # Round 2's SFT data holds the annotated dialogs and both rounds' rejection samples.
    sft2 = rec("round2/sft", SFTRecord)
    data = rec("chat_data", ChatDataRecord)
    assert sft2.by_source == {"annotated": data.sft_dialogs, "round1": rs1.sft_dialogs, "round2": rs2.sft_dialogs}
    # The annotated dialogs went through SFT curation: each planted malformed line dropped by its own reason, the
    # 10 emoji-spammed replies kept without their emojis, the 20 apologies cut to 5% of what is kept.
    malformed = {k: 2 for k in MALFORMED} | {"line too long": 1}
    assert data.planted == malformed | {"apologetic": 20, "emoji spam": 10}
    assert data.curation_in == 48 + sum(data.planted.values())
    kept_sorry = 20 - data.curation_dropped["apologetic over target share"]
    assert data.curation_dropped == malformed | {"apologetic over target share": 20 - kept_sorry}
    assert data.sft_dialogs == 48 + 10 + kept_sorry and kept_sorry == int(0.05 * 58 / 0.95) == 3
    assert data.apologetic_kept == kept_sorry and data.emoji_replies_kept == 0
    # The preference pairs' planted malformed records: each dropped by the reader with its own reason.
    assert data.preferences_planted == data.preferences_dropped == {k: 2 for k in BAD_PREFERENCES}
    # The average is the mean of the runs' weights.
    from training.posttrain.averaging import load_weights

    avg = rec("round1/average", AverageRecord)
    runs = [load_weights(p) for p in avg.averaged]
    mean = load_weights(avg.model)
    for k in mean:
        torch.testing.assert_close(mean[k], (runs[0][k] + runs[1][k]) / 2)
    # SFT and the reward model average their runs too (backbone and head); the runs saw different data orders.
    sft_runs = [load_weights(x.model) for x in sft2.runs]
    assert len(sft_runs) == 2 and not torch.equal(sft_runs[0]["norm.weight"], sft_runs[1]["norm.weight"])
    sft_mean = load_weights(sft2.model)
    for k in sft_mean:
        torch.testing.assert_close(sft_mean[k], (sft_runs[0][k] + sft_runs[1][k]) / 2)
    heads = [load_weights(Path(x.model).parent / "head.safetensors")["weight"] for x in rm1.runs]
    torch.testing.assert_close(load_weights(Path(rm1.model) / "head.safetensors")["weight"], (heads[0] + heads[1]) / 2)
    again = dag.run(stages, tmp_path, cfg, ex, log=lambda *_: None)
    assert again.ran == [] and len(again.skipped) == len(result.ran)


def test_a_stage_killed_between_its_runs_resumes_without_retraining_the_finished_run(tmp_path, monkeypatch):
    from training.posttrain import phase

    cfg = Config(posttrain=dataclasses.replace(small(), rounds=0))
    sft_stage = Stage("round0/sft", posttrain.sft, inputs=("chat_data", "anneal"))
    stages = [Stage("anneal", anneal), Stage("chat_data", posttrain.chat_data), sft_stage]
    real_fit, calls = phase.fit, []

    def dies_on_the_second_run(*args, **kw):
        calls.append(kw.get("cfg", args[4]).seed)
        if len(calls) == 2:
            raise SystemExit("killed")  # as if the job died while training run 1
        return real_fit(*args, **kw)

    monkeypatch.setattr(phase, "fit", dies_on_the_second_run)
    with pytest.raises(SystemExit):
        dag.run(stages, tmp_path, cfg, InProcess(), log=lambda *_: None)
    partial = tmp_path / "stages" / "round0/sft.partial"
    assert (partial / "run0" / "run.json").is_file() and not (partial / "run1" / "run.json").exists()
    monkeypatch.setattr(phase, "fit", lambda *a, **kw: (calls.append(a[4].seed), real_fit(*a, **kw))[1])
    result = dag.run(stages, tmp_path, cfg, InProcess(), log=lambda *_: None)
    assert result.ran == ["round0/sft"] and calls == [0, 1, 1]  # run 0 trained once; run 1 after the restart
    root = tmp_path / "stages"
    rec = dag.StageContext("round0/sft", tmp_path, root, {"round0/sft": root / "round0/sft"}, cfg).record(
        "round0/sft", SFTRecord
    )
    assert len(rec.runs) == 2 and all(".partial" not in x.model for x in rec.runs) and Path(rec.model).is_dir()
