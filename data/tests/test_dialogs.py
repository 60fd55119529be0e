"""The post-training record contract: round trips, every error kind named by file/line/field, skip counts."""

import json

import pytest

from data.dialogs import (
    STRENGTHS,
    USED_STRENGTHS,
    Dialog,
    Preference,
    ranked_responses,
    read_dialogs,
    read_preferences,
    write_jsonl,
)

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
GOOD_PREF = {"prompt": PROMPT, "chosen": "Paris.", "rejected": "Lyon.", "strength": "better"}
GOOD_DIALOG = {"messages": PROMPT + [{"role": "assistant", "content": "Paris."}], "source": "hand", "round": 1}


def jsonl(path, lines):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    return path


def test_round_trip_and_ranking(tmp_path):
    dialogs = [Dialog(GOOD_DIALOG["messages"], "hand", 1), Dialog([{"role": "user", "content": "é"},
                                                                   {"role": "assistant", "content": "ü"}])]  # fmt: skip
    prefs = [
        Preference(PROMPT, "Paris.", "Lyon.", None, "significantly_better", 2),
        Preference(PROMPT, "Paris.", "Lyon.", "Paris, on the Seine.", "slightly_better"),
    ]
    assert read_dialogs(write_jsonl(tmp_path / "d.jsonl", dialogs)).records == dialogs
    back = read_preferences(write_jsonl(tmp_path / "p.jsonl", prefs))
    assert back.records == prefs and back.dropped == {} and back.lines == 2
    assert ranked_responses(prefs[0]) == ["Paris.", "Lyon."]
    assert ranked_responses(prefs[1]) == ["Paris, on the Seine.", "Paris.", "Lyon."]
    assert USED_STRENGTHS == ("significantly_better", "better") and STRENGTHS[:2] == USED_STRENGTHS
    # Atomic writer: no temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "p.jsonl"]


BAD_PREFS = [
    ({k: v for k, v in GOOD_PREF.items() if k != "chosen"}, "chosen", "missing field"),
    ({**GOOD_PREF, "strength": "much_better"}, "strength", "unknown strength"),
    ({**GOOD_PREF, "rejected": "   "}, "rejected", "empty response"),
    ({**GOOD_PREF, "edited": ""}, "edited", "empty response"),
    ({**GOOD_PREF, "prompt": [{"role": "assistant", "content": "hi"}]}, r"prompt\[0\].role", "bad first role"),
    ({**GOOD_PREF, "prompt": PROMPT + [{"role": "bot", "content": "x"}]}, r"prompt\[2\].role", "unknown role"),
    ({**GOOD_PREF, "prompt": PROMPT[1:] + PROMPT[:1]}, r"prompt\[1\].role", "misplaced system"),
    ({**GOOD_PREF, "edit": "typo'd optional field"}, "edit", "unknown field"),
    ({**GOOD_PREF, "round": -1}, "round", "bad type"),
    (b'{"prompt": "caf\xe9"}', "<line>", "not UTF-8"),
    (b'{"prompt": [', "<line>", "not JSON"),
]


@pytest.mark.parametrize("record, field, reason", BAD_PREFS)
def test_each_bad_preference_names_file_line_and_field(tmp_path, record, field, reason):
    path = jsonl(tmp_path / "prefs.jsonl", [GOOD_PREF, b"", GOOD_PREF, record, GOOD_PREF])
    with pytest.raises(ValueError, match=rf"^{path}:4: field '{field}': {reason}") as e:
        read_preferences(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "record, field, reason",
    [
        ({"source": "x"}, "messages", "missing field"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, r"messages\[0\].role", "bad first role"),
        ({"messages": [{"role": "user", "content": "hi"}]}, r"messages\[0\].role", "bad last role"),
        ({"messages": PROMPT + [{"role": "assistant", "content": ""}]}, r"messages\[2\].content", "empty response"),
        ({"messages": [{"role": "user"}]}, r"messages\[0\].content", "missing field"),
        ({"messages": ["hi"]}, r"messages\[0\]", "not an object"),
    ],
)
def test_each_bad_dialog_names_file_line_and_field(tmp_path, record, field, reason):
    path = jsonl(tmp_path / "dialogs.jsonl", [record])
    with pytest.raises(ValueError, match=rf"^{path}:1: field '{field}': {reason}"):
        read_dialogs(path)


def test_skip_mode_counts_every_drop(tmp_path):
    lines = [GOOD_PREF] + [r for r, _, _ in BAD_PREFS] + [GOOD_PREF, {**GOOD_PREF, "strength": "meh"}]
    result = read_preferences(jsonl(tmp_path / "p.jsonl", lines), on_error="skip")
    assert len(result.records) == 2
    assert result.dropped == {
        "missing field": 1, "unknown strength": 2, "empty response": 2, "bad first role": 1, "unknown role": 1,
        "misplaced system": 1, "unknown field": 1, "bad type": 1, "not UTF-8": 1, "not JSON": 1,
    }  # fmt: skip
    assert result.lines == len(lines) == len(result.records) + sum(result.dropped.values())
    with pytest.raises(ValueError, match="on_error"):
        read_preferences(tmp_path / "p.jsonl", on_error="ignore")


def test_hugging_face_datasets_reads_the_files(tmp_path):
    import datasets

    prefs = [Preference(PROMPT, "Paris.", "Lyon.", None, "better", 0),
             Preference(PROMPT, "Paris.", "Nice.", "Paris!", "significantly_better", 1)]  # fmt: skip
    path = write_jsonl(tmp_path / "p.jsonl", prefs)
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 2
    assert ds[1]["edited"] == "Paris!" and ds[0]["edited"] is None
    assert ds[1]["prompt"] == PROMPT and ds[1]["round"] == 1 and ds[0]["strength"] == "better"
