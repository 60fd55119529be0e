"""Readers: the first step of a pipeline, turning a task's input files into Documents.

Formats, chosen per file by extension and content (`sniff`): WARC / WET / ARC (gzip or not; the tolerant
parser in data/warc.py), JSON Lines or one JSON document (a list of records, or one record; optionally .gz),
HTML files (`.html`, `.htm`, `.html.gz`: one page each), Parquet, Hugging Face `datasets` (a save_to_disk folder,
or `hf://<name>` from the hub when online), and this pipeline's own document Parquet files (`documents`, e.g.
the output of an earlier run). A file no reader fits (empty, unknown, corrupt) is skipped and named in the
step's counters; unreadable records are dropped with a reason (the detail says what was wrong), never raised.

Archive records that are not captures of a web page are skipped by WARC type (request, metadata, revisit,
warcinfo, ...) and by URL scheme (dns:, metadata://, filedesc://, ...), and counted; of the rest, each problem
has its own drop reason: `malformed record`, `record too large`, `truncated record` (a block cut short; kept
instead with `truncated=keep`), `not an HTTP response`, `HTTP status not 200`, `undecodable Content-Encoding`.
Non-text content types are the extract step's to drop.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data.base import Step, Task
from data.document import SCHEMA, Document, read_documents
from data.warc import MALFORMED, TOO_LARGE, TRUNCATED, iter_records, parse_http

DOC_RECORDS = ("response", "resource", "conversion")
FORMATS = ("warc", "jsonl", "html", "parquet", "documents", "hf")
WARC_SUFFIXES = (".warc", ".warc.gz", ".wet", ".wet.gz", ".arc", ".arc.gz")
JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")
HTML_SUFFIXES = (".html", ".htm", ".xhtml", ".html.gz", ".htm.gz", ".xhtml.gz")
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
FILE_ERRORS = (OSError, EOFError, ValueError, zlib.error)  # pyarrow's ArrowInvalid is a ValueError
MAX_JSON_DOCUMENT = 256 << 20  # a JSON file whose first line is not JSON is parsed whole up to this size


@dataclass
class ReadConfig:
    format: str = "auto"  # auto (per file, by extension and content) | warc | jsonl | html | parquet | hf | documents
    text_key: str = "text"
    id_key: str = "id"  # records without it get "<file>#<record number>"
    url_key: str = "url"
    date_keys: list[str] = field(default_factory=lambda: ["date", "timestamp", "crawl_date"])
    meta_keys: list[str] = field(default_factory=list)  # extra JSONL/Parquet fields copied into meta
    hf_split: str = "train"
    max_record_bytes: int = 128 << 20  # larger WARC records are skipped (counted)
    url_schemes: list[str] = field(default_factory=lambda: ["http", "https"])  # archive records of others: skipped
    truncated: str = "drop"  # drop | keep: archive records whose block was cut short (kept ones get meta.truncated)
    limit: int = 0  # at most this many documents per task (0: no limit)


def _head(path: Path, n: int = 1 << 16) -> bytes:
    """The first n bytes of the file's content (gunzipped when it is gzip)."""
    with open(path, "rb") as f:
        raw = f.read(n)
    if raw[:2] != b"\x1f\x8b":
        return raw
    return zlib.decompressobj(31).decompress(raw, n)


def _open(path: str):
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115 (the caller closes it)


def _json_kind(path: Path) -> tuple[str, str]:
    """JSON Lines when the first line is a JSON value, else one JSON document when the whole file is one,
    else JSON Lines with a broken first line when the second line parses, else nothing."""
    with _open(str(path)) as f:
        first = f.readline(MAX_JSON_DOCUMENT)
        try:
            json.loads(first)
            return "jsonl", ""
        except ValueError:
            pass
        second = f.readline(MAX_JSON_DOCUMENT)
    try:
        with _open(str(path)) as f:
            json.loads(f.read(MAX_JSON_DOCUMENT + 1))
        return "jsonl", ""  # one JSON document: the jsonl reader takes it whole
    except ValueError as e:
        error = e
    try:
        json.loads(second)
        return "jsonl", ""
    except ValueError:
        return "", f"invalid JSON, neither JSON Lines nor one JSON document ({error})"


def _looks_html(text: bytes) -> bool:
    low = text[:1024].lower()
    return low.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (
        low.startswith(b"<") and (b"<html" in low or b"<body" in low or b"<head" in low)
    )


def sniff(path: str) -> tuple[str, str]:
    """(format, "") for the reader that fits the file, or ("", why none does): by content where it tells
    (WARC/ARC lines, Parquet magic, JSON, HTML), by extension where content alone does not."""
    if path.startswith("hf://"):
        return "hf", ""
    p = Path(path)
    if p.is_dir():
        return ("hf", "") if any((p / m).exists() for m in HF_MARKERS) else ("", "a folder, not a saved dataset")
    name = p.name.lower()
    try:
        if p.stat().st_size == 0:
            return "", "empty file"
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic == b"PAR1" or name.endswith(".parquet"):
            return _parquet_kind(p)
        head = _head(p)
    except (OSError, EOFError, zlib.error) as e:
        return "", f"unreadable ({type(e).__name__}: {e})"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        return "", "empty file" if not head else "only whitespace"
    if text.startswith((b"WARC/", b"filedesc://")) or name.endswith(WARC_SUFFIXES):
        return "warc", ""  # (garbage before the first record is the parser's to count)
    if text[:1] in (b"{", b"["):
        try:
            return _json_kind(p)
        except (OSError, EOFError, zlib.error) as e:
            return "", f"unreadable ({type(e).__name__}: {e})"
    if name.endswith(JSON_SUFFIXES):
        return "", f"not JSON (starts with {text[:24]!r})"
    if name.endswith(HTML_SUFFIXES) or _looks_html(text):
        return "html", ""
    return "", f"cannot tell its format (starts with {text[:24]!r}); set read.format"


def _parquet_kind(p: Path) -> tuple[str, str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except (OSError, ValueError) as e:  # ArrowInvalid: not Parquet, or its footer is broken
        return "", f"corrupt Parquet ({type(e).__name__}: {e})"
    if pf.metadata.num_rows == 0:
        return "", "empty Parquet file (0 rows)"
    return ("documents" if set(pf.schema_arrow.names) == set(SCHEMA.names) else "parquet"), ""


class Reader(Step):
    name = "read"

    def __init__(self, cfg: ReadConfig, env):
        super().__init__(cfg, env)
        if cfg.truncated not in ("drop", "keep"):
            raise ValueError(f"read.truncated must be drop or keep, got '{cfg.truncated}'")
        self.skipped: set[str] = set()  # paths of input files no reader fits

    def __call__(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        # The reader is the source: its "in" is every record that could have been a document.
        st = task.step_stats(self.name)
        n = 0
        t0 = time.perf_counter()
        for shard in self.env.tasks[task.shard]:
            fmt, why = (self.cfg.format, "") if self.cfg.format != "auto" else sniff(shard.path)
            if fmt == "arc":
                fmt = "warc"
            if fmt and fmt not in FORMATS:
                raise ValueError(f"read.format must be auto, {', '.join(FORMATS)}; got '{fmt}'")
            if not fmt:
                self._skip(st, shard, why)
                continue
            before = st.docs_in
            for doc, reason, detail in self.read_file(fmt, shard, st):
                st.docs_in += 1
                if reason:
                    task.drop(doc, self.name, reason, detail)
                    continue
                st.docs_out += 1
                st.chars_out += len(doc.text)
                task.seconds[self.name] += time.perf_counter() - t0
                yield doc
                t0 = time.perf_counter()
                n += 1
                if self.cfg.limit and n >= self.cfg.limit:
                    return
            if shard.path in self.skipped:
                continue
            if shard.part == 0:  # file-level counts once per file, not once per part
                st.counters["input files read"] += 1
            if st.docs_in == before and shard.parts == 1:
                st.counters[f"input without documents: {shard.name}"] += 1
        task.seconds[self.name] += time.perf_counter() - t0

    def _skip(self, st, shard, why: str) -> None:
        """A file no reader fits: named in the counters (once, not once per part)."""
        self.skipped.add(shard.path)
        if shard.part == 0:
            st.counters["input files skipped"] += 1
            st.counters[f"input skipped: {shard.name} ({why})"] += 1

    def read_file(self, fmt: str, shard, st) -> Iterator[tuple[Document, str, str]]:
        """(document, drop reason, detail) per record; reason "" means a good document. A file that breaks
        before its first record is skipped and named; one that breaks later gives one `malformed record`."""
        reader = getattr(self, fmt)
        if fmt == "hf":  # its errors are configuration errors (a missing split): they stop the run
            yield from reader(shard, st)
            return
        i = 0
        try:
            for item in reader(shard, st):
                yield item
                i += 1
        except FILE_ERRORS as e:
            why = f"{type(e).__name__}: {str(e)[:200]}"
            if i == 0:
                self._skip(st, shard, f"unreadable: {why}")
            else:
                doc = Document(id=f"{shard.name}#rest", source=shard.name)
                yield doc, MALFORMED, f"the file breaks after record {i}: {why}"

    # Each format yields (document, reason, detail); reason "" means a good document.

    def warc(self, shard, st) -> Iterator[tuple[Document, str, str]]:
        index = -1
        seen: set[str] = set()
        schemes = {s.lower() for s in self.cfg.url_schemes}
        for rec in iter_records(shard.path, self.cfg.max_record_bytes):
            if rec.repaired:
                st.counters["repaired records"] += 1
            rtype, broken = rec.type, bool(rec.error or rec.truncated)
            if rtype not in DOC_RECORDS and (rtype or not broken):  # (a broken untyped record may be a page)
                st.counters[f"skipped {rtype or 'untyped'} records"] += 1
                if broken:
                    st.counters[f"unreadable {rtype} records"] += 1
                continue
            url = rec.headers.get("warc-target-uri", "").strip().strip("<>").strip()
            scheme = url.split(":", 1)[0].lower() if ":" in url else ""
            if url and scheme not in schemes:  # dns:, metadata://, file://: not a capture of a web page
                st.counters[f"skipped {scheme}: records"] += 1
                continue
            index += 1
            if index % shard.parts != shard.part:
                continue
            rid = rec.headers.get("warc-record-id", "").strip("<> ") or f"{shard.name}@{rec.offset}"
            if rid in seen:  # ids must be unique (the ccNet sample repeats one)
                rid = f"{rid}#{index}"
            seen.add(rid)
            doc = Document(id=rid, url=url, date=rec.headers.get("warc-date", ""), source=shard.name)
            where = f"record {rid} ({url or 'no URL'}) at file byte {rec.file_offset}"
            if rec.error:
                yield doc, rec.reason, f"{where}: {rec.error}"
                continue
            if rec.truncated:
                if self.cfg.truncated != "keep" or not rec.block:
                    yield doc, TRUNCATED, f"{where}: {rec.truncated}"
                    continue
                doc.meta["truncated"] = True
            yield self._payload(doc, rec, st, where)

    def _payload(self, doc: Document, rec, st, where: str) -> tuple[Document, str, str]:
        if rec.type == "response":
            http = parse_http(rec.block, self.cfg.max_record_bytes)
            if http.error:
                # A cut block explains a broken response better than the symptom does.
                return doc, TRUNCATED if rec.truncated else http.reason, f"{where}: {http.error}"
            if http.note:
                st.counters[f"Content-Encoding not applied: {http.note.split(' (')[0]}"] += 1
            if http.status != 200:
                st.counters[f"http status {http.status}"] += 1
                return doc, "HTTP status not 200", str(http.status)
            doc.raw, doc.content_type = http.body, http.headers.get("content-type", "")
        else:
            doc.raw, doc.content_type = rec.block, rec.headers.get("content-type", "")
            if rec.type == "conversion" and not doc.content_type:
                doc.content_type = "text/plain"
        if rec.truncated:
            st.counters["truncated records kept"] += 1
        return doc, "", ""

    def _from_record(self, rec: dict, fallback_id: str, shard) -> tuple[Document, str, str]:
        rid = rec.get(self.cfg.id_key)
        doc = Document(id=str(rid) if rid not in (None, "") else fallback_id, source=shard.name)
        doc.url = str(rec.get(self.cfg.url_key) or "")
        for key in self.cfg.date_keys:
            if rec.get(key):
                doc.date = str(rec[key])
                break
        text = rec.get(self.cfg.text_key)
        if not isinstance(text, str):
            return doc, MALFORMED, f"no string field '{self.cfg.text_key}'"
        doc.text = text
        for key in self.cfg.meta_keys:
            if key in rec:
                doc.meta[key] = rec[key]
        return doc, "", ""

    def jsonl(self, shard, st) -> Iterator[tuple[Document, str, str]]:
        """JSON Lines; or, when the first line is not JSON but the whole file is, one JSON document: a list of
        records, or one record (an object with the text key; any other object is skipped as holding none)."""
        with _open(shard.path) as f:
            first = f.readline()
        try:
            json.loads(first)
        except ValueError:
            try:
                with _open(shard.path) as f:
                    whole = json.loads(f.read(MAX_JSON_DOCUMENT + 1))
            except ValueError:
                whole = None  # JSON Lines with a broken first line
            if whole is not None:
                yield from self._json_document(whole, shard, st)
                return
        with _open(shard.path) as f:
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
                    yield Document(id=fallback, source=shard.name), MALFORMED, f"line {i + 1}: invalid JSON ({e})"
                    continue
                if not isinstance(rec, dict):
                    yield Document(id=fallback, source=shard.name), MALFORMED, f"line {i + 1}: not a JSON object"
                    continue
                yield self._from_record(rec, fallback, shard)

    def _json_document(self, whole, shard, st) -> Iterator[tuple[Document, str, str]]:
        if isinstance(whole, dict) and self.cfg.text_key in whole:
            whole = [whole]
        if not isinstance(whole, list):
            kind = f"an object without '{self.cfg.text_key}'" if isinstance(whole, dict) else type(whole).__name__
            self._skip(st, shard, f"a JSON document holding no records: {kind}")
            return
        if shard.part == 0:
            st.counters["JSON documents read whole"] += 1
        for i, rec in enumerate(whole):
            if i % shard.parts != shard.part:
                continue
            fallback = f"{shard.name}#{i}"
            if not isinstance(rec, dict):
                yield Document(id=fallback, source=shard.name), MALFORMED, f"item {i}: not a JSON object"
                continue
            yield self._from_record(rec, fallback, shard)

    def html(self, shard, st) -> Iterator[tuple[Document, str, str]]:
        """One page per file: its bytes (gunzipped) go to the extract step as text/html; the id is the file name."""
        if shard.part != 0:
            return
        doc = Document(id=shard.name, source=shard.name, content_type="text/html")
        cap = self.cfg.max_record_bytes
        with _open(shard.path) as f:
            raw = f.read(cap + 1)
        if len(raw) > cap:
            yield doc, TOO_LARGE, f"{shard.name}: over max_record_bytes {cap}"
            return
        doc.raw = raw
        yield doc, "", ""

    def parquet(self, shard, st) -> Iterator[tuple[Document, str, str]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(shard.path)
        i = 0
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                if i % shard.parts == shard.part:
                    yield self._from_record(rec, f"{shard.name}#{i}", shard)
                i += 1

    def hf(self, shard, st) -> Iterator[tuple[Document, str, str]]:
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

    def documents(self, shard, st) -> Iterator[tuple[Document, str, str]]:
        for i, doc in enumerate(read_documents(shard.path)):
            if i % shard.parts == shard.part:
                yield doc, "", ""
