"""Readers: the first step of a pipeline, turning a task's input files into Documents.

Formats: WARC / WET (gzip or not; the tolerant parser in data/warc.py), JSONL (optionally .gz), Parquet,
Hugging Face `datasets` (a save_to_disk folder, or `hf://<name>` from the hub when online), and this
pipeline's own document Parquet files (`documents`, e.g. the output of an earlier run).
Unreadable records are dropped with reason `malformed record` (the detail says what was wrong), never raised.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data.base import Step, Task
from data.document import SCHEMA, Document, read_documents
from data.warc import iter_records, parse_http

DOC_RECORDS = ("response", "resource", "conversion")


@dataclass
class ReadConfig:
    format: str = "auto"  # auto | warc | jsonl | parquet | hf | documents
    text_key: str = "text"
    id_key: str = "id"  # records without it get "<file>#<record number>"
    url_key: str = "url"
    date_keys: list[str] = field(default_factory=lambda: ["date", "timestamp", "crawl_date"])
    meta_keys: list[str] = field(default_factory=list)  # extra JSONL/Parquet fields copied into meta
    hf_split: str = "train"
    max_record_bytes: int = 128 << 20  # larger WARC records are skipped (counted)
    limit: int = 0  # at most this many documents per task (0: no limit)


def detect_format(path: str) -> str:
    if path.startswith("hf://"):
        return "hf"
    p = Path(path)
    if p.is_dir():
        return "hf"
    name = p.name.lower()
    if name.endswith((".warc", ".warc.gz", ".wet", ".wet.gz", ".arc", ".arc.gz")):
        return "warc"
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        return "jsonl"
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        names = set(pq.ParquetFile(path).schema_arrow.names)
        return "documents" if names == set(SCHEMA.names) else "parquet"
    with open(p, "rb") as f:
        head = f.read(64)
    if head.startswith(b"\x1f\x8b") or head.lstrip().startswith((b"WARC/", b"filedesc://")):
        return "warc"
    if head.lstrip().startswith(b"{"):
        return "jsonl"
    raise ValueError(f"{path}: cannot tell its format; set read.format")


class Reader(Step):
    name = "read"

    def __call__(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        # The reader is the source: its "in" is every record that could have been a document.
        st = task.step_stats(self.name)
        n = 0
        t0 = time.perf_counter()
        for shard in self.env.tasks[task.shard]:
            fmt = self.cfg.format if self.cfg.format != "auto" else detect_format(shard.path)
            reader = {
                "warc": self.warc,
                "jsonl": self.jsonl,
                "parquet": self.parquet,
                "hf": self.hf,
                "documents": self.documents,
            }.get(fmt)
            if reader is None:
                raise ValueError(f"read.format must be auto, warc, jsonl, parquet, hf or documents; got '{fmt}'")
            for doc, error in reader(shard, st):
                st.docs_in += 1
                if error:
                    task.drop(doc, self.name, "malformed record", error)
                    continue
                st.docs_out += 1
                st.chars_out += len(doc.text)
                task.seconds[self.name] += time.perf_counter() - t0
                yield doc
                t0 = time.perf_counter()
                n += 1
                if self.cfg.limit and n >= self.cfg.limit:
                    return
        task.seconds[self.name] += time.perf_counter() - t0

    # Each format yields (document, error); error "" means a good document.

    def warc(self, shard, st) -> Iterator[tuple[Document, str]]:
        index = -1
        seen: set[str] = set()
        for rec in iter_records(shard.path, self.cfg.max_record_bytes):
            if rec.repaired:
                st.counters["repaired records"] += 1
            rtype = rec.type
            if not rec.error and rtype not in DOC_RECORDS:
                st.counters[f"skipped {rtype or 'untyped'} records"] += 1
                continue
            index += 1
            if index % shard.parts != shard.part:
                continue
            rid = rec.headers.get("warc-record-id", "").strip("<> ") or f"{shard.name}@{rec.offset}"
            if rid in seen:  # ids must be unique (the ccNet sample repeats one)
                rid = f"{rid}#{index}"
            seen.add(rid)
            url = rec.headers.get("warc-target-uri", "").strip().strip("<>").strip()
            doc = Document(id=rid, url=url, date=rec.headers.get("warc-date", ""), source=shard.name)
            if rec.error:
                yield doc, rec.error
                continue
            if rtype == "response":
                http = parse_http(rec.block, self.cfg.max_record_bytes)
                if http.error:
                    yield doc, f"HTTP: {http.error}"
                    continue
                if http.status != 200:
                    st.counters[f"http status {http.status}"] += 1
                    yield doc, f"HTTP status {http.status}"
                    continue
                doc.raw, doc.content_type = http.body, http.headers.get("content-type", "")
            else:
                doc.raw, doc.content_type = rec.block, rec.headers.get("content-type", "")
                if rtype == "conversion" and not doc.content_type:
                    doc.content_type = "text/plain"
            yield doc, ""

    def _from_record(self, rec: dict, fallback_id: str, shard) -> tuple[Document, str]:
        rid = rec.get(self.cfg.id_key)
        doc = Document(id=str(rid) if rid not in (None, "") else fallback_id, source=shard.name)
        doc.url = str(rec.get(self.cfg.url_key) or "")
        for key in self.cfg.date_keys:
            if rec.get(key):
                doc.date = str(rec[key])
                break
        text = rec.get(self.cfg.text_key)
        if not isinstance(text, str):
            return doc, f"no string field '{self.cfg.text_key}'"
        doc.text = text
        for key in self.cfg.meta_keys:
            if key in rec:
                doc.meta[key] = rec[key]
        return doc, ""

    def jsonl(self, shard, st) -> Iterator[tuple[Document, str]]:
        opener = gzip.open if shard.path.lower().endswith(".gz") else open
        try:
            f = opener(shard.path, "rb")
            for i, raw in enumerate(f):
                if i % shard.parts != shard.part or not raw.strip():
                    continue
                fallback = f"{shard.name}#{i}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line = raw.decode("utf-8", "replace")
                    st.counters["invalid utf-8 lines"] += 1
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    yield Document(id=fallback, source=shard.name), f"line {i + 1}: invalid JSON ({e})"
                    continue
                if not isinstance(rec, dict):
                    yield Document(id=fallback, source=shard.name), f"line {i + 1}: not a JSON object"
                    continue
                yield self._from_record(rec, fallback, shard)
            f.close()
        except (OSError, EOFError) as e:
            yield Document(id=f"{shard.name}#end", source=shard.name), f"file unreadable: {type(e).__name__}: {e}"

    def parquet(self, shard, st) -> Iterator[tuple[Document, str]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(shard.path)
        i = 0
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                if i % shard.parts == shard.part:
                    yield self._from_record(rec, f"{shard.name}#{i}", shard)
                i += 1

    def hf(self, shard, st) -> Iterator[tuple[Document, str]]:
        import datasets

        if shard.path.startswith("hf://"):
            ds = datasets.load_dataset(shard.path[5:], split=self.cfg.hf_split, streaming=True)
            rows = (r for i, r in enumerate(ds) if i % shard.parts == shard.part)
        else:
            ds = datasets.load_from_disk(shard.path)
            if isinstance(ds, datasets.DatasetDict):
                if self.cfg.hf_split not in ds:
                    raise ValueError(
                        f"{shard.path}: no split '{self.cfg.hf_split}' (has {sorted(ds)}); set read.hf_split"
                    )
                ds = ds[self.cfg.hf_split]
            rows = iter(ds.shard(shard.parts, shard.part, contiguous=True)) if shard.parts > 1 else iter(ds)
        name = Path(shard.path).name
        for i, rec in enumerate(rows):
            yield self._from_record(rec, f"{name}#{shard.part}.{i}", shard)

    def documents(self, shard, st) -> Iterator[tuple[Document, str]]:
        for i, doc in enumerate(read_documents(shard.path)):
            if i % shard.parts == shard.part:
                yield doc, ""
