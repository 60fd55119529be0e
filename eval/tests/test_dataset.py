"""GSM8K and MATH items come through `datasets`: the vendored copy by default, a user's file or folder, or a hub
name; a wrong path, a bad record or a missing field is one error naming the file, the record and the field."""

from __future__ import annotations

import gzip
import json

import pytest

from eval import gsm8k, hendrycks_math
from eval.dataset import DatasetConfig, DatasetError
from tools import assets


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_vendored_splits_load_by_default():
    test, train = gsm8k.load(), gsm8k.load(split="train")
    assert (len(test), len(train)) == (1319, 7473)
    assert test[0].id == "gsm8k/test/0" and test[0].answer == "18"
    assert len(hendrycks_math.load()) == 500 and len(hendrycks_math.load(subset="math")) == 5000
    train_math = hendrycks_math.load(DatasetConfig(split="train"), subset="math")
    assert len(train_math) == 7500 and train_math[0].id.startswith("train/")


def test_a_users_file_folder_and_gzip_load_the_same_records(tmp_path):
    rows = assets.jsonl("gsm8k/test.jsonl.gz")[:5]
    one = write(tmp_path / "dev.jsonl", rows)
    folder = tmp_path / "split"
    folder.mkdir()
    write(folder / "a.jsonl", rows[:2])
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows[2:]))
    by_file, by_folder = gsm8k.load(str(one)), gsm8k.load(DatasetConfig(path=str(folder)))
    assert [i.answer for i in by_file] == [i.answer for i in by_folder] == [i.answer for i in gsm8k.load()[:5]]
    math_rows = [{"problem": "1+1?", "solution": "It is $\\boxed{2}$.", "type": "Algebra", "level": "Level 1"}]
    item = hendrycks_math.load(str(write(tmp_path / "m.jsonl", math_rows)))[0]
    assert (item.answer, item.subject, item.level) == ("2", "Algebra", "Level 1")


def test_bad_sources_name_the_file_record_and_field(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.jsonl: no such file or folder"):
        gsm8k.load(str(tmp_path / "nowhere.jsonl"))
    missing = write(tmp_path / "missing.jsonl", [{"question": "q", "answer": "a #### 1"}, {"question": "q2"}])
    with pytest.raises(DatasetError, match=r"missing.jsonl: record 2 has no field 'answer'"):
        gsm8k.load(str(missing))
    wrong = write(tmp_path / "wrong.jsonl", [{"prompt": "q", "answer": "a #### 1"}])
    with pytest.raises(DatasetError, match=r"wrong.jsonl: record 1 has no field 'question' \(it has: answer, prompt\)"):
        gsm8k.load(str(wrong))
    no_marker = write(tmp_path / "nomark.jsonl", [{"question": "q", "answer": "just 4"}])
    with pytest.raises(DatasetError, match=r"nomark.jsonl: record 1 field 'answer' has no '#### <answer>'"):
        gsm8k.load(str(no_marker))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "a #### 1"}\n{"question": "q2"\n', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"broken.jsonl: not readable as json records .*JSON parse error"):
        gsm8k.load(str(broken))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(DatasetError, match=r"notes.txt: not a dataset file"):
        gsm8k.load(str(notes))
    no_answer = write(tmp_path / "m.jsonl", [{"problem": "p", "solution": "no box here"}])
    with pytest.raises(DatasetError, match=r"m.jsonl: record 1 has no field 'answer' and no \\boxed"):
        hendrycks_math.load(str(no_answer))
    with pytest.raises(DatasetError, match="no vendored 'dev' split .known: test, train."):
        gsm8k.load(DatasetConfig(split="dev"))
    with pytest.raises(DatasetError, match="set either path"):
        gsm8k.load(DatasetConfig(path="x.jsonl", hub="openai/gsm8k"))


def test_a_hub_dataset_that_cannot_be_reached_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    cfg = DatasetConfig(hub="openai/gsm8k", name="main", revision="e53f048856ff4f594e959d75785d2c2d37b678ee")
    with pytest.raises(DatasetError, match=r"hub dataset openai/gsm8k@e53f0488.*\[test\] could not be loaded.*path="):
        gsm8k.load(cfg)
