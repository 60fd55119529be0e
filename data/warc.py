"""A tolerant streaming WARC/WET parser: gzip (per record, one member, or misaligned members) or plain.

Real crawls are not always well formed (third_party/data/web/warcio-broken): Content-Length can be wrong (the
ccNet WET sample counts characters, not bytes), gzip members need not line up with records, files end early.
Rather than trusting Content-Length blindly, after each block the parser checks that the next record starts
where it should; if not, it extends the block to the next `WARC/` line (as cc_net does) and counts a repair.
Anything it cannot read becomes a `Record` with `error` set, so callers count and skip it; nothing raises.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 1 << 16
_RECORD_START = re.compile(rb"\n(WARC/1\.[01]\r?\n[A-Za-z-]+: )")


@dataclass
class Record:
    offset: int  # byte offset of the record in the decompressed stream
    headers: dict[str, str] = field(default_factory=dict)  # WARC headers, lower-cased names
    block: bytes = b""
    error: str = ""  # why the record is unusable ("" if fine)
    repaired: str = ""  # what was fixed while reading it ("" if nothing)

    @property
    def type(self) -> str:
        return self.headers.get("warc-type", "")


class _Lines:
    """readline()/read() over a binary stream with one line of push-back and a byte position."""

    def __init__(self, f):
        self.f, self.pushed, self.pos = f, b"", 0

    def readline(self, limit: int = -1) -> bytes:
        if self.pushed:
            i = self.pushed.find(b"\n")
            if i >= 0:
                line, self.pushed = self.pushed[: i + 1], self.pushed[i + 1 :]
            else:
                line, self.pushed = self.pushed + self.f.readline(limit), b""
        else:
            line = self.f.readline(limit)
        self.pos += len(line)
        return line

    def unread(self, data: bytes) -> None:
        self.pushed = data + self.pushed
        self.pos -= len(data)

    def read(self, n: int) -> bytes:
        head = b""
        if self.pushed:
            head, self.pushed = self.pushed[:n], self.pushed[n:]
            n -= len(head)
        data = head + (self.f.read(n) if n > 0 else b"")
        self.pos += len(data)
        return data


def open_stream(path: str):
    """A binary stream of the file's bytes, gunzipped (all members) when it starts with the gzip magic."""
    f = open(path, "rb")  # noqa: SIM115 (returned to the caller)
    magic = f.read(2)
    f.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f, mode="rb")
    return io.BufferedReader(f)


def _is_warc_line(line: bytes) -> bool:
    return line.startswith(b"WARC/") and len(line) < 32


def iter_records(path: str, max_record_bytes: int = 1 << 27) -> Iterator[Record]:
    """Every record of a WARC/WET file; malformed parts come out as records with `error` set."""
    try:
        stream = open_stream(path)
    except OSError as e:
        yield Record(0, error=f"cannot open: {e}")
        return
    r = _Lines(stream)
    try:
        yield from _parse(r, max_record_bytes)
    except (OSError, EOFError, zlib.error) as e:  # corrupt or truncated gzip
        yield Record(r.pos, error=f"compressed stream broken at byte {r.pos}: {type(e).__name__}: {e}")
    finally:
        stream.close()


def _parse(r: _Lines, max_record_bytes: int) -> Iterator[Record]:
    first = True
    while True:
        line = r.readline(MAX_HEADER_BYTES)
        while line in (b"\r\n", b"\n"):
            line = r.readline(MAX_HEADER_BYTES)
        if not line:
            return
        start = r.pos - len(line)
        if not _is_warc_line(line):
            if first and line.startswith(b"filedesc://"):
                yield Record(start, error="ARC file (legacy format, not supported)")
                return
            skipped = _skip_to_warc_line(r)
            yield Record(start, error=f"garbage between records ({skipped + len(line)} bytes skipped)")
            continue
        first = False
        headers, ok = {}, True
        size = 0
        while True:
            h = r.readline(MAX_HEADER_BYTES)
            size += len(h)
            if not h:
                yield Record(start, headers, error="file ends inside a record header")
                return
            if h in (b"\r\n", b"\n"):
                break
            if size > MAX_HEADER_BYTES or b":" not in h:
                ok = False
                break
            name, _, value = h.decode("utf-8", "replace").partition(":")
            headers[name.strip().lower()] = value.strip()
        if not ok:
            _skip_to_warc_line(r)
            yield Record(start, headers, error="malformed record header")
            continue
        try:
            length = int(headers.get("content-length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            _skip_to_warc_line(r)
            yield Record(start, headers, error=f"bad Content-Length {headers.get('content-length')!r}")
            continue
        if length > max_record_bytes:
            _discard(r, length)
            yield Record(start, headers, error=f"record of {length} bytes over max_record_bytes {max_record_bytes}")
            continue
        block = r.read(length)
        if len(block) < length:
            yield Record(
                start, headers, block, error=f"truncated: file ends {length - len(block)} bytes into the block"
            )
            return
        rec = Record(start, headers, block)
        try:
            _check_end(r, rec, length, max_record_bytes)
        except (OSError, EOFError, zlib.error):
            yield rec  # the stream broke after this record: keep it, then report the break
            raise
        yield rec


def _check_end(r: _Lines, rec: Record, length: int, max_record_bytes: int) -> None:
    """The block must be followed by blank lines and then the next record (or the end of the file); if not,
    Content-Length was wrong, and the block is cut or extended to where the next record really starts."""
    block = rec.block
    tail = r.readline(MAX_HEADER_BYTES)
    extra = b""
    while tail in (b"\r\n", b"\n"):
        extra += tail
        tail = r.readline(MAX_HEADER_BYTES)
    if not tail:
        return
    if _is_warc_line(tail):
        r.unread(tail)
        return
    look = block + extra + tail
    inner = _RECORD_START.search(look)
    if inner and inner.start() < len(block):  # Content-Length too long: the next record starts inside
        r.unread(look[inner.start(1) :])
        rec.block = look[: inner.start()].rstrip(b"\r\n")
        rec.repaired = f"Content-Length {length} ran past the block ({len(rec.block)} bytes)"
        return
    more = [extra, tail]  # Content-Length too short: the block runs on to the next WARC/ line
    while True:
        line = r.readline(1 << 20)
        if not line or _is_warc_line(line):
            break
        more.append(line)
        if sum(map(len, more)) > max_record_bytes:
            break
    rec.block = (block + b"".join(more)).rstrip(b"\r\n")
    rec.repaired = f"Content-Length {length} did not end the block ({len(rec.block)} bytes read)"
    if line:
        r.unread(line)


def _skip_to_warc_line(r: _Lines) -> int:
    skipped = 0
    while True:
        line = r.readline(1 << 20)
        if not line:
            return skipped
        if _is_warc_line(line):
            r.unread(line)
            return skipped
        skipped += len(line)


def _discard(r: _Lines, n: int) -> None:
    while n > 0:
        got = r.read(min(n, 1 << 20))
        if not got:
            return
        n -= len(got)


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    error: str = ""


def parse_http(block: bytes, max_bytes: int) -> HttpResponse:
    """Split an HTTP response into status, headers and a decoded body (chunked and gzip/deflate undone,
    with `max_bytes` as a cap on decompression so a compression bomb cannot exhaust memory)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        cut = block.find(sep)
        if cut >= 0:
            head, body = block[:cut], block[cut + len(sep) :]
            break
    else:
        return HttpResponse(0, {}, b"", "no end of HTTP headers")
    lines = head.decode("latin-1").splitlines()
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return HttpResponse(0, {}, b"", f"bad HTTP status line {lines[0][:80] if lines else ''!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "").lower().strip()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            wbits = 47 if encoding != "deflate" else 15  # 47: gzip or zlib header, auto-detected
            d = zlib.decompressobj(wbits)
            out = d.decompress(body, max_bytes + 1)
            if len(out) > max_bytes:
                return HttpResponse(status, headers, b"", f"{encoding} body inflates past {max_bytes} bytes")
            body = out
        except zlib.error:
            if encoding == "deflate":
                try:
                    body = zlib.decompressobj(-15).decompress(body, max_bytes + 1)[:max_bytes]
                except zlib.error as e:
                    return HttpResponse(status, headers, b"", f"bad {encoding} body: {e}")
            # otherwise crawlers often store the already-decoded body with the header left in: keep it
    elif encoding not in ("", "identity", "none", "utf-8", "utf8"):
        return HttpResponse(status, headers, b"", f"unsupported Content-Encoding {encoding!r}")
    return HttpResponse(status, headers, body)


def _dechunk(body: bytes) -> bytes:
    """Undo HTTP chunked transfer encoding; if the body does not parse as chunks, it is returned unchanged."""
    out, pos = [], 0
    while pos < len(body):
        end = body.find(b"\r\n", pos)
        if end < 0:
            return body
        try:
            size = int(body[pos:end].split(b";")[0].strip() or b"x", 16)
        except ValueError:
            return body
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)
