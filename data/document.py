"""The Document record that flows through every step, and its on-disk form between pipeline stages.

A document enters as a reader's record (raw bytes of a web page, or text), is turned into text by the
extract step, and picks up annotations on the way (language, category, classifier scores, split, tokens).
Between stages documents are stored as Parquet files with one fixed schema (`SCHEMA`), written in batches
so memory does not grow with the shard's size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.large_string()),
        ("url", pa.string()),
        ("date", pa.string()),
        ("source", pa.string()),
        ("raw", pa.large_binary()),
        ("content_type", pa.string()),
        ("lang", pa.string()),
        ("lang_score", pa.float32()),
        ("category", pa.string()),
        ("meta", pa.string()),
        ("tokens", pa.large_list(pa.uint32())),
    ]
)
BATCH_DOCS = 512
BATCH_BYTES = 32 << 20


@dataclass(slots=True)
class Document:
    id: str  # unique and stable: WARC-Record-ID, the input's own id, or "<file>#<record number>"
    text: str = ""
    url: str = ""
    date: str = ""  # crawl date, ISO 8601 ("" if unknown)
    source: str = ""  # the input file it came from (its name)
    raw: bytes | None = None  # the undecoded payload, until the extract step turns it into `text`
    content_type: str = ""  # media type of `raw` (text/html, text/plain, ...)
    lang: str = ""
    lang_score: float = 0.0
    category: str = ""  # the mix category: general | math | code | multilingual
    meta: dict = field(default_factory=dict)  # scores, split, planted-defect labels...; JSON-able values only
    tokens: np.ndarray | None = None  # uint32 token ids, once tokenized


class DocumentWriter:
    """Appends documents to one Parquet file; `close()` publishes it (temporary name, then rename)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, SCHEMA, compression="zstd")
        self.batch: list[Document] = []
        self.batch_bytes = 0
        self.count = 0

    def add(self, doc: Document) -> None:
        self.batch.append(doc)
        self.batch_bytes += len(doc.text) + (len(doc.raw) if doc.raw else 0)
        self.count += 1
        if len(self.batch) >= BATCH_DOCS or self.batch_bytes >= BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.batch:
            self.writer.write_batch(to_batch(self.batch))
            self.batch, self.batch_bytes = [], 0

    def close(self) -> Path:
        self._flush()
        self.writer.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


# Columns are built by polars and handed to pyarrow through the Arrow C interface: pyarrow's own pa.array
# imports pandas (0.2 s of CPU, a tenth of a short pipeline run) the first time it is given a Python list, only
# to ask whether the list is a pandas object.
_POLARS = {pa.string(): pl.String, pa.large_string(): pl.String, pa.large_binary(): pl.Binary, pa.float32(): pl.Float32}


def _arrow(values, dtype) -> pa.Array:
    return pl.Series(values=values, dtype=dtype).to_arrow()


def _tokens_column(tokens: list[np.ndarray | None]) -> pa.Array:
    """large_list<uint32> from one flat array of every document's tokens and their offsets (null: untokenized)."""
    valid = np.fromiter((t is not None for t in tokens), bool, len(tokens))
    lengths = np.fromiter((0 if t is None else len(t) for t in tokens), np.int64, len(tokens))
    values = np.concatenate([np.asarray(t, np.uint32) for t in tokens if t is not None] or [np.zeros(0, np.uint32)])
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return pa.LargeListArray.from_arrays(
        _arrow(offsets, pl.Int64), _arrow(values, pl.UInt32), mask=_arrow(~valid, pl.Boolean)
    )


def to_batch(docs: list[Document]) -> pa.RecordBatch:
    columns = {f.name: _arrow([getattr(d, f.name) for d in docs], _POLARS[f.type]).cast(f.type) for f in SCHEMA
               if f.name not in ("meta", "tokens")}  # fmt: skip
    columns["meta"] = _arrow([json.dumps(d.meta, sort_keys=True) for d in docs], pl.String).cast(pa.string())
    columns["tokens"] = _tokens_column([d.tokens for d in docs])
    return pa.RecordBatch.from_arrays([columns[f.name] for f in SCHEMA], schema=SCHEMA)


def write_documents(path: str | os.PathLike, docs: Iterable[Document]) -> int:
    writer = DocumentWriter(path)
    for d in docs:
        writer.add(d)
    writer.close()
    return writer.count


def read_documents(path: str | os.PathLike, columns: list[str] | None = None) -> Iterator[Document]:
    """Stream the documents of a Parquet file written by DocumentWriter, one row group at a time."""
    pf = pq.ParquetFile(path)
    names = columns or SCHEMA.names
    for i in range(pf.num_row_groups):
        table = pf.read_row_group(i, columns=names)
        cols = {name: table.column(name).to_pylist() for name in names if name != "tokens"}
        token_col = table.column("tokens") if "tokens" in names else None
        for j in range(table.num_rows):
            kw = {k: v[j] for k, v in cols.items()}
            if "meta" in kw:
                kw["meta"] = json.loads(kw["meta"]) if kw["meta"] else {}
            for key in ("text", "url", "date", "source", "content_type", "lang", "category"):
                if key in kw and kw[key] is None:
                    kw[key] = ""
            if token_col is not None:
                chunk = token_col[j]
                kw["tokens"] = None if not chunk.is_valid else chunk.values.to_numpy(zero_copy_only=False)
            yield Document(**kw)
