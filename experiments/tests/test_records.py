"""Typed stage records: round trips, clear errors naming the file and key, the harness conversion, and the dag
storing a returned record as result.json with its paths moved to the published stage."""

from __future__ import annotations

import dataclasses
import json

import pytest

from experiments import dag, executors, records
from experiments.records import (
    AnnealRecord,
    CategoryTotals,
    CurateRecord,
    EvalRecord,
    EvaluateRecord,
    Gate,
    Gsm8kScore,
    LongContextRecord,
    LongContextStage,
    LongLoss,
    Math500Score,
    ModelExport,
    PlantedFates,
    ReportRecord,
    ShardsRecord,
    TokenizerRecord,
    TrainRecord,
)
from experiments.tests import toy

PLANTED = PlantedFates(
    junk_planted={"boilerplate": 4, "spam": 3},
    junk_caught={"boilerplate": 4, "spam": 2},
    junk_caught_fraction=6 / 7,
    duplicate_groups=5,
    duplicate_groups_with_one_survivor=5,
    keep_documents=20,
    keep_kept_fraction=1.0,
)


def train_summary(phase: str = "pretrain", **extra) -> dict:
    """A training phase's summary as training.pretrain.run returns it (plus a key the record does not keep)."""
    return {"phase": phase, "steps": 12, "tokens": 24576, "loss": 5.25, "tokens_per_s": 1500.5, "mfu": None,
            "seconds": 16.4, "checkpoint": "/w/checkpoints/step_00000012", "spikes": 0, "skipped_categories": ["code"],
            "resumed_from": None, "valid_loss": 5.5, "plot": None, "model": {"path": "/w/model", "tokenizer": True},
            "not_in_the_record": 1, **extra}  # fmt: skip


def gate(seq_len: int, passed: bool = True) -> dict:
    return {"tokens": 4096, "seq_len": seq_len, "loss": 5.0, "accuracy": 0.75, "pre_loss": 4.9, "loss_limit": 5.1,
            "loss_ok": True, "accuracy_ok": passed, "passed": passed}  # fmt: skip


# As training.long_context.run returns it: one stage that passed its gate after one extension.
LC_SUMMARY = {
    "stages": [{**train_summary("long_context/stage1_512"), "stage": "stage1_512", "gate": gate(512),
                "gates": [gate(512, passed=False), gate(512)], "extensions": 1}],
    "model": {"path": "/w/stage1_512/model", "tokenizer": True}, "final_stage": "stage1_512",
}  # fmt: skip
LONG_LOSS = LongLoss(early=5.0, late=4.75, short_len=256, long_len=1024)
EXAMPLES = [
    CurateRecord(documents_in=100, documents_kept=80, documents_dropped=20, planted=PLANTED),
    TokenizerRecord(vocab_size=4096, training_chars=123456, bytes_per_token=3.25),
    ShardsRecord(documents=80, tokens=50000, by_category={"code": CategoryTotals(10, 9), "web": CategoryTotals(70, 1)}),
    TrainRecord.from_summary(train_summary()),
    LongContextRecord.from_summary(LC_SUMMARY),
    AnnealRecord.from_summary({**train_summary("anneal"), "last_valid_loss": 5.6, "averaged": ["step_6", "step_12"]}),
    EvaluateRecord(
        models=("pretrain", "anneal"),
        results={
            "pretrain": EvalRecord({"all": 5.5, "web": 5.4}, {"256": 0.5}, None, None, LONG_LOSS),
            "anneal": EvalRecord({"all": 5.25}, {"256": 1.0}, Gsm8kScore(0.0, 0.0625, 16), Math500Score(0.0, 16), None),
        },
    ),
    ReportRecord(checks={"pre-training loss falls": True}, metrics=42),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_every_record_type_round_trips(tmp_path, record):
    path = records.write(tmp_path / "result.json", record)
    stored = json.loads(path.read_text())
    assert stored["type"] == type(record).__name__ and stored["version"] == record.VERSION
    assert stored["fields"] == json.loads(json.dumps(dataclasses.asdict(record)))
    assert records.read(path, type(record)) == record


def test_converted_training_summaries_keep_the_numbers():
    t = TrainRecord.from_summary(train_summary())
    assert (t.steps, t.loss, t.mfu, t.skipped_categories) == (12, 5.25, None, ("code",))
    assert t.model == ModelExport("/w/model", True)
    lc = EXAMPLES[4]
    assert lc.stages[0].gate == Gate(**gate(512)) and lc.stages[0].gates[0].passed is False
    assert isinstance(lc.stages[0], LongContextStage) and lc.stages[0].train.phase == "long_context/stage1_512"
    assert EXAMPLES[5].train.valid_loss == 5.5 and EXAMPLES[5].averaged == ("step_6", "step_12")
    with pytest.raises(KeyError, match="lacks 'valid_loss'"):
        TrainRecord.from_summary({k: v for k, v in train_summary().items() if k != "valid_loss"})


def edit(path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_a_missing_or_unexpected_field_is_named_with_the_file(tmp_path):
    path = records.write(tmp_path / "stages/curate/result.json", EXAMPLES[0])
    edit(path, lambda d: d["fields"]["planted"].pop("keep_kept_fraction"))
    with pytest.raises(records.RecordError) as e:
        records.read(path, CurateRecord)
    assert str(path) in str(e.value) and "missing key planted.keep_kept_fraction" in str(e.value)

    path = records.write(tmp_path / "tok.json", EXAMPLES[1])
    edit(path, lambda d: d["fields"].update(merges=7))
    with pytest.raises(records.RecordError, match="unexpected key merges") as e:
        records.read(path, TokenizerRecord)
    assert "tok.json" in str(e.value)


def test_a_wrong_type_name_version_or_value_is_refused_naming_the_file(tmp_path):
    path = records.write(tmp_path / "shards.json", EXAMPLES[2])
    with pytest.raises(records.RecordError) as e:
        records.read(path, CurateRecord)
    assert str(path) in str(e.value) and "holds a ShardsRecord record, expected CurateRecord" in str(e.value)

    edit(path, lambda d: d.update(version=99))
    with pytest.raises(records.RecordError, match="version 99, this code reads version 1") as e:
        records.read(path, ShardsRecord)
    assert "shards.json" in str(e.value)

    path = records.write(tmp_path / "shards.json", EXAMPLES[2])
    edit(path, lambda d: d["fields"]["by_category"]["web"].update(tokens="many"))
    with pytest.raises(records.RecordError, match=r"by_category\['web'\]\.tokens: expected int, got str 'many'"):
        records.read(path, ShardsRecord)

    (tmp_path / "plain.json").write_text(json.dumps({"vocab_size": 4096}))
    with pytest.raises(records.RecordError, match="plain.json: not a record file"):
        records.read(tmp_path / "plain.json", TokenizerRecord)
    with pytest.raises(records.RecordError, match="absent.json: no such record file"):
        records.read(tmp_path / "absent.json", TokenizerRecord)


def test_a_record_that_could_not_be_read_back_is_not_written(tmp_path):
    bad = TokenizerRecord(vocab_size="4096", training_chars=1, bytes_per_token=3.0)  # type: ignore[arg-type]
    with pytest.raises(records.RecordError, match="vocab_size: expected int"):
        records.write(tmp_path / "tok.json", bad)
    assert not (tmp_path / "tok.json").exists()
    with pytest.raises(ValueError, match="models"):
        EvaluateRecord(models=("pretrain",), results={})
    with pytest.raises(TypeError, match="not a record"):
        records.write(tmp_path / "x.json", {"vocab_size": 1})


def test_from_harness_takes_the_numbers_the_report_needs():
    def acc(a: float, n: int) -> dict:
        return {"n": n, "accuracy": a, "ci_low": 0.0, "ci_high": 1.0}

    niah = [(256, True), (256, False), (1024, True), (512, False), (512, False), (1024, True)]
    results = {
        "config": {"tasks": ["ppl", "niah", "gsm8k", "math500"]},
        "tasks": {
            "ppl": {"summary": {"web": {"loss": 5.0, "perplexity": 148.4, "tokens": 300},
                                "all": {"loss": 4.5, "perplexity": 90.0, "tokens": 400}}},
            "niah": {"predictions": [{"context_length": n, "depth": 0.0, "correct": c} for n, c in niah]},
            "gsm8k": {"summary": {"strict_match": acc(0.125, 16), "flexible_match": acc(0.25, 16)}},
            "math500": {"summary": {"accuracy": acc(0.0625, 16), "by_subject": {}, "decided_by": {}}},
        },
    }  # fmt: skip
    e = EvalRecord.from_harness(results, LONG_LOSS)
    assert e.valid_loss == {"web": 5.0, "all": 4.5}
    assert e.niah == {"256": 0.5, "512": 0.0, "1024": 1.0} and list(e.niah) == ["256", "512", "1024"]
    assert e.gsm8k == Gsm8kScore(strict=0.125, flexible=0.25, n=16)
    assert e.math500 == Math500Score(accuracy=0.0625, n=16)
    assert e.long_loss.gap == -0.25
    only_ppl = EvalRecord.from_harness({"tasks": {"ppl": results["tasks"]["ppl"]}})
    assert (only_ppl.niah, only_ppl.gsm8k, only_ppl.math500, only_ppl.long_loss) == ({}, None, None, None)


def train_stage(ctx):
    """A stage returning a record that names files in its workdir, as the training stages do."""
    (ctx.workdir / "model").mkdir(exist_ok=True)
    return TrainRecord.from_summary(train_summary(model={"path": str(ctx.workdir / "model"), "tokenizer": False}))


def reader_stage(ctx):
    with pytest.raises(TypeError, match=r"read it with ctx.record\('train', TrainRecord\)"):
        ctx.result("train")
    with pytest.raises(records.RecordError, match="holds a TrainRecord record, expected AnnealRecord"):
        ctx.record("train", AnnealRecord)
    return {"model": ctx.record("train", TrainRecord).model.path}


def test_the_dag_stores_a_returned_record_as_result_json_for_later_stages(tmp_path):
    cfg = toy.Config(executor="debug")
    ex = executors.StageExecutor(cfg, tmp_path, log=lambda *_: None)
    stages = [dag.Stage("train", train_stage), dag.Stage("read", reader_stage, inputs=("train",))]
    dag.run(stages, tmp_path, cfg, ex, log=lambda *_: None)
    final = tmp_path / "stages/train"
    done = json.loads((final / dag.COMPLETE).read_text())
    assert done["record"] == "TrainRecord" and "result" not in done
    record = records.read(final / dag.RESULT, TrainRecord)
    assert record.model == ModelExport(str(final / "model"), False) and (final / "model").is_dir()
    read = json.loads((tmp_path / "stages/read" / dag.COMPLETE).read_text())
    assert read["result"] == {"model": str(final / "model")}
