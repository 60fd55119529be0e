"""Readers: real and malformed WARCs, the WET sample, JSONL, Parquet, Hugging Face datasets, our documents."""

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.base import Task
from data.document import Document, write_documents
from data.readers import ReadConfig, Reader
from data.runner import Env, expand_inputs, plan_tasks
from data.warc import iter_records
from tools import assets


def read(paths, tmp_path, tasks=0, **cfg):
    inputs = [p if isinstance(p, tuple) else (p, p.name) for p in paths]
    env = Env(output=tmp_path, work=tmp_path, tasks=plan_tasks(inputs, tasks), cfg=None)
    out, stats = [], []
    for shard in range(len(env.tasks)):
        task = Task(shard)
        out += list(Reader(ReadConfig(**cfg), env)(iter(()), task))
        stats.append(task.step_stats("read"))
    return out, stats


def test_malformed_warcs_are_survived(tmp_path):
    broken = assets.path("web/warcio-broken")
    files = sorted(p for p in broken.iterdir() if p.suffix in (".warc", ".gz", ".arc"))
    docs, stats = read(files, tmp_path)
    by_file = dict(zip([f.name for f in files], stats))
    # A Content-Length two bytes short: the record is repaired, not lost.
    trunc = by_file["example-trunc.warc"]
    assert trunc.docs_out == 1 and trunc.counters["repaired records"] == 1
    # One gzip member for the whole file, and members that do not line up with records: both read.
    assert by_file["example-bad-non-chunked.warc.gz"].docs_out == 1
    assert by_file["example-wrong-chunks.warc.gz"].docs_out == 1
    assert by_file["bad.arc"].dropped == {"malformed record": 1}
    spaces = [d for d in docs if d.url.startswith("file:///example with spaces")]
    assert len(spaces) == 1 and spaces[0].content_type == "image/png"
    for d in docs:
        if d.url == "http://example.com/":
            assert b"Example Domain" in d.raw


def test_real_warcs_and_the_wet_sample(tmp_path):
    web = assets.path("web")
    docs, stats = read([web / "dolma-sample-0000.warc.gz", web / "resiliparse-warcfile.warc.gz"], tmp_path)
    assert stats[0].docs_in == 22 + 2 and stats[1].docs_in == 16  # responses (+ 2 resource records)
    assert all(not d.url.startswith("<") and d.date.startswith("20") for d in docs)
    assert stats[0].counters["skipped request records"] == 22
    wet, st = read([web / "ccnet-sample.wet.txt"], tmp_path)
    assert [d.url for d in wet] == ["http://sample_english.com", "http://sample_chinese.zh", "http://sample_russian.ru"]
    assert len({d.id for d in wet}) == 3  # two records share a WARC-Record-ID in the file
    texts = [d.raw.decode("utf-8") for d in wet]
    assert texts[0].startswith("Famous Mark Twain Quotes") and texts[0].rstrip().endswith("Truth isn't.")
    assert "馬克·吐溫" in texts[1] or "吐溫" in texts[1]
    assert texts[2].startswith("Цитаты знаменитого Марка Твена") and texts[2].endswith("Правда нет.")
    assert st[0].counters["repaired records"] == 4


def test_truncated_and_garbage_warc(tmp_path):
    rec = (
        b"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Record-ID: <urn:x>\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 11\r\n\r\nhello world\r\n\r\n"
    )
    path = tmp_path / "t.warc"
    path.write_bytes(b"junk\n" + rec + b"more text\n" + rec.replace(b"urn:x", b"urn:y") + rec[:60])
    recs = list(iter_records(str(path)))
    # Bytes after a block that do not start a record are taken as the block's continuation (a Content-Length
    # that is too short, as in the ccNet WET sample); bytes before any record are skipped.
    assert [(r.block, bool(r.repaired)) for r in recs if not r.error] == [
        (b"hello world\r\n\r\nmore text", True),
        (b"hello world", False),
    ]
    assert [r.error.split(" (")[0] for r in recs if r.error] == ["garbage between records", "malformed record header"]
    gz = tmp_path / "cut.warc.gz"
    body = [bytes(random.Random(i).choices(b"abcdefghij klmnop", k=3000)) for i in range(3)]
    recs_bytes = [rec.replace(b"Content-Length: 11", b"Content-Length: 3000").replace(b"hello world", b) for b in body]
    gz.write_bytes(gzip.compress(b"".join(recs_bytes))[:-200])  # one gzip member, its end cut off
    recs = list(iter_records(str(gz)))
    assert [r.block for r in recs if not r.error] == body[:2]
    assert recs[-1].error.startswith("compressed stream broken")


def test_jsonl_with_bad_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [
        json.dumps({"text": "fine", "url": "u1", "id": "x1"}).encode(),
        b"{not json",
        json.dumps([1]).encode(),
        json.dumps({"txt": "no text"}).encode(),
        b'{"text": "caf\xe9 latin-1"}',
        b"",
    ]
    path.write_bytes(b"\n".join(lines))
    docs, stats = read([path], tmp_path)
    assert [(d.id, d.text) for d in docs] == [("x1", "fine"), ("a.jsonl#4", "caf\ufffd latin-1")]
    assert stats[0].dropped == {"malformed record": 3} and stats[0].counters["invalid utf-8 lines"] == 1


def test_parquet_hf_and_documents(tmp_path):
    pq.write_table(
        pa.table({"text": ["a b", "c d"], "url": ["u", "v"], "lang_hint": ["x", "y"]}), tmp_path / "p.parquet"
    )
    docs, _ = read([tmp_path / "p.parquet"], tmp_path, meta_keys=["lang_hint"])
    assert [(d.id, d.text, d.meta) for d in docs] == [
        ("p.parquet#0", "a b", {"lang_hint": "x"}),
        ("p.parquet#1", "c d", {"lang_hint": "y"}),
    ]
    import datasets

    datasets.Dataset.from_dict(
        {"text": [f"doc {i}" for i in range(10)], "id": [str(i) for i in range(10)]}
    ).save_to_disk(str(tmp_path / "hf"))
    paths = expand_inputs(str(tmp_path / "hf"))
    docs, _ = read(paths, tmp_path, tasks=3)
    assert sorted(d.id for d in docs) == sorted(str(i) for i in range(10))
    write_documents(tmp_path / "docs.parquet", [Document("d1", "t", category="math", meta={"quality": 0.5})])
    docs, _ = read([tmp_path / "docs.parquet"], tmp_path)
    assert docs[0].category == "math" and docs[0].meta == {"quality": 0.5}


def test_split_files_into_more_tasks(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(23)))
    docs, stats = read([path], tmp_path, tasks=4)
    assert len(stats) == 4 and sorted(d.text for d in docs) == sorted(f"t{i}" for i in range(23))
    assert len({d.id for d in docs}) == 23
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_inputs(str(tmp_path / "nope"))
