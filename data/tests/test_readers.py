"""Readers: real and malformed WARCs, the WET sample, JSONL, Parquet, Hugging Face datasets, our documents,
HTML files, and folders of mixed files."""

import gzip
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.base import Env, Task
from data.document import Document, read_documents, write_documents
from data.readers import ReadConfig, Reader, sniff
from data.runner import expand_inputs, plan_tasks
from data.tests.helpers import final_documents, run_pipeline
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
    assert by_file["bad.arc"].dropped == {"malformed record": 2, "not an HTTP response": 1}  # read as ARC
    # A file:// resource is no capture of a web page: skipped by scheme unless the scheme is asked for.
    assert by_file["example-space-in-target-uri.warc.gz"].counters["skipped file: records"] == 1
    spaces, _ = read([broken / "example-space-in-target-uri.warc.gz"], tmp_path, url_schemes=["file"])
    assert [(d.url, d.content_type) for d in spaces] == [("file:///example with spaces.png", "image/png")]
    for d in docs:
        if d.url == "http://example.com/":
            assert b"Example Domain" in d.raw


def test_real_warcs_and_the_wet_sample(tmp_path):
    web = assets.path("web")
    docs, stats = read([web / "dolma-sample-0000.warc.gz", web / "resiliparse-warcfile.warc.gz"], tmp_path)
    assert stats[0].docs_in == 22 and stats[1].docs_in == 16  # the responses
    assert all(not d.url.startswith("<") and d.date.startswith("20") for d in docs)
    assert stats[0].counters["skipped request records"] == 22
    assert stats[0].counters["skipped metadata: records"] == 2  # wget's manifest and arguments (resource records)
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
    assert [r.block for r in recs[:2]] == body[:2] and len(recs) == 3
    assert 0 < len(recs[2].block) < 3000 and body[2].startswith(recs[2].block)  # read as far as it goes
    assert "cut short" in recs[2].truncated and not recs[2].error


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


def test_documents_round_trip_through_parquet(tmp_path):
    """Every field, with tokens absent, empty, of one length and of mixed lengths, in batches of one or more."""
    docs = [
        Document("a"),
        Document("b", "héllo\nwörld", url="u", date="2024-01-01", source="s.warc.gz", raw=b"\x00<p>", lang="de"),
        Document("c", content_type="text/html", lang_score=0.5, category="code", meta={"k": [1, "x"]}),
        Document("d", tokens=np.zeros(0, np.uint32)),
        Document("e", tokens=np.array([1, 2, 3], np.uint32)),
        Document("f", tokens=np.array([2**32 - 1], np.uint32)),
    ]
    path = tmp_path / "docs.parquet"
    for batch in ([docs[4]], docs[3:5], docs):
        write_documents(path, batch)
        back = list(read_documents(path))
        assert len(back) == len(batch)
        for got, want in zip(back, batch):
            assert (got.tokens is None) == (want.tokens is None)
            if want.tokens is not None:
                assert got.tokens.dtype == np.uint32 and got.tokens.tolist() == want.tokens.tolist()
            got.tokens = want.tokens = None
            assert got == want


def test_split_files_into_more_tasks(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(23)))
    docs, stats = read([path], tmp_path, tasks=4)
    assert len(stats) == 4 and sorted(d.text for d in docs) == sorted(f"t{i}" for i in range(23))
    assert len({d.id for d in docs}) == 23
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_inputs(str(tmp_path / "nope"))


def test_a_folder_of_mixed_files(tmp_path, capsys):
    """Readers by extension and content; every file no reader fits is named, none stops the run."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "notes.txt").write_text("remember to check the crawl\n")
    (src / "empty.jsonl").write_bytes(b"")
    (src / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    (src / "stats.json").write_text(json.dumps({"pages": 3, "hosts": ["a", "b"]}, indent=2))  # not data
    records = [{"id": f"p{i}", "text": f"pretty printed record {i}"} for i in range(3)]
    (src / "records.json").write_text(json.dumps(records, indent=2))  # one JSON document: a list of records
    (src / "lines.jsonl").write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(4)))
    page = "<!DOCTYPE html><html><body><p>" + "A page handed over as an HTML file. " * 8 + "</p></body></html>"
    (src / "page.html").write_text(page)
    (src / "sub" / "page.html.gz").write_bytes(gzip.compress(page.replace("A page", "Another page").encode()))
    (src / "data.bin").write_bytes(b"\x00\x01binary")
    out = tmp_path / "out"
    summary = run_pipeline(out, [f"input={src}", "steps=[read]", "executor=inline"])
    err = capsys.readouterr().err
    skipped = {"notes.txt", "empty.jsonl", "corrupt.parquet", "data.bin"}
    assert all(f"input: skipping {name}" in err for name in skipped) and "records.json" not in err
    st = summary["steps"]["read"]
    assert summary["funnel_ok"] and st["docs_in"] == st["docs_out"] == 3 + 4 + 2 and st["dropped"] == {}
    named = {k.split(": ", 1)[1].split(" (")[0]: k for k in st["counters"] if k.startswith("input skipped: ")}
    assert set(named) == skipped | {"stats.json"} and st["counters"]["input files skipped"] == 5
    assert "empty file" in named["empty.jsonl"] and "corrupt Parquet (ArrowInvalid" in named["corrupt.parquet"]
    assert "holding no records" in named["stats.json"] and st["counters"]["input files read"] == 4
    docs = final_documents(out)
    assert set(docs) == {"p0", "p1", "p2", "page.html", "sub/page.html.gz"} | {f"lines.jsonl#{i}" for i in range(4)}
    assert docs["page.html"].raw == page.encode() and docs["page.html"].content_type == "text/html"
    assert docs["sub/page.html.gz"].raw.startswith(b"<!DOCTYPE html><html><body><p>Another page")
    # Nothing readable at all: an error that names every file.
    with pytest.raises(FileNotFoundError, match=r"empty.jsonl: empty file.*notes.txt: cannot tell"):
        expand_inputs(f"{src / 'empty.jsonl'},{src / 'notes.txt'}")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no file"):
        expand_inputs(str(tmp_path / "nothing"))


def test_format_sniffing(tmp_path):
    cases = {
        "a.warc.gz": gzip.compress(b"WARC/1.0\r\nWARC-Type: warcinfo\r\n"),
        "crawl.dat": b"\n\nWARC/1.0\r\n",  # no known suffix: the content tells
        "old.arc": b"filedesc://old.arc 0.0.0.0 19960923142103 text/plain 76\n",
        "x.jsonl.gz": gzip.compress(b'{"text": "a"}\n'),
        "broken-first-line.jsonl": b'{"text": \n{"text": "b"}\n',
        "page.htm": b"<p>a fragment of a page</p>",
        "page": b"  <html><body>no suffix</body></html>",
        "blank.jsonl": b"\n \n",
        "gz-of-nothing.jsonl.gz": gzip.compress(b""),
        "text.json": b"not json at all",
        "bad.json": b'{\n  "text": "cut off',
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    got = {name: sniff(str(tmp_path / name)) for name in cases}
    assert {n: f for n, (f, _) in got.items() if f} == {
        "a.warc.gz": "warc",
        "crawl.dat": "warc",
        "old.arc": "warc",
        "x.jsonl.gz": "jsonl",
        "broken-first-line.jsonl": "jsonl",
        "page.htm": "html",
        "page": "html",
    }
    assert got["blank.jsonl"][1] == "only whitespace" and got["gz-of-nothing.jsonl.gz"][1] == "empty file"
    assert got["text.json"][1].startswith("not JSON") and got["bad.json"][1].startswith("invalid JSON")
    docs, stats = read([tmp_path / "broken-first-line.jsonl"], tmp_path)
    assert [d.text for d in docs] == ["b"] and stats[0].dropped == {"malformed record": 1}
