"""A tolerant streaming reader of web archives, WARC (any version, WET included) and ARC (v1 and v2), gzip (per
record, one member, or misaligned members) or plain, and of the HTTP responses inside them.

Real crawls are not always well formed (third_party/data/web/warcio-broken): length fields can be wrong (the
ccNet WET sample counts characters, not bytes; ClueWeb09's WARC/0.18 files lost bytes to line-end rewriting),
gzip members need not line up with records, ARC records need not be followed by their newline, files end early.
Rather than trusting a length blindly, after each block the parser checks that the next record starts where it
should; if not, it cuts or extends the block to where the next record really starts (as cc_net does) and counts
a repair. A block cut short by the end of the file or a broken gzip member comes out as far as it goes, marked
`truncated` with the file byte where the stream broke. Anything else it cannot read becomes a `Record` with
`error` set, so callers count and skip it; nothing raises.
"""

from __future__ import annotations

import bisect
import io
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 1 << 16
MALFORMED, TOO_LARGE, TRUNCATED = "malformed record", "record too large", "truncated record"
_WARC_START = re.compile(rb"\n(WARC/\d\.\d+\r?\n[A-Za-z-]+: )")  # a record starting inside a block
# An ARC header line: URL (Heritrix wrote some with spaces), IP, 14-digit date (some writers add digits), content
# type, then the length (v1) or result code, checksum, location, offset, file name and length (v2).
_ARC_LINE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*:[^\r\n]* \S+ \d{8,} \S+(?: \S+){1,6}\r?\n")
_ARC_START = re.compile(rb"\n(" + _ARC_LINE.pattern + rb")")


@dataclass
class Record:
    offset: int  # byte offset of the record in the decompressed stream
    headers: dict[str, str] = field(default_factory=dict)  # WARC headers (ARC fields under WARC names), lower-cased
    block: bytes = b""
    error: str = ""  # why the record is unusable ("" if fine)
    reason: str = MALFORMED  # the drop reason that goes with `error`
    repaired: str = ""  # what was fixed while reading it ("" if nothing)
    truncated: str = ""  # where and why the block was cut short ("" if whole)
    file_offset: int = 0  # byte offset in the file of the gzip member holding the record start (or of the record)

    @property
    def type(self) -> str:
        return self.headers.get("warc-type", "")


class _Gunzip(io.RawIOBase):
    """The concatenated members of a gzip file, decompressed as far as they go: a member cut short or corrupt
    ends the stream, with `error` saying where in the file, instead of raising and losing what was read."""

    def __init__(self, f):
        self.f, self.pending, self.read_total = f, b"", 0
        self.d = None  # the current member's decompressor (None between members)
        self.out = 0  # bytes produced so far
        self.starts: list[int] = []  # decompressed offset where each member starts ...
        self.file_starts: list[int] = []  # ... and its file offset
        self.error, self.done = "", False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.f.close()
        super().close()

    def _fill(self) -> bool:
        more = self.f.read(1 << 16)
        self.read_total += len(more)
        self.pending += more
        return bool(more)

    def _start_member(self) -> bool:
        while len(self.pending) < 2 and self._fill():
            pass
        at = self.read_total - len(self.pending)
        if not self.pending or self.pending[:2] != b"\x1f\x8b":
            self._fill()
            if self.pending.strip(b"\x00"):  # zero padding after the last member is fine, anything else is not
                self.error = f"bytes at file byte {at} are not a gzip member"
            self.done = True
            return False
        self.d = zlib.decompressobj(31)
        self.starts.append(self.out)
        self.file_starts.append(at)
        return True

    def readinto(self, b) -> int:
        while not self.done:
            if self.d is None and not self._start_member():
                break
            chunk = self.pending if self.pending or self._fill() else b""
            try:
                data = self.d.decompress(chunk, max(len(b), 1))  # b"": output zlib may still hold
            except zlib.error as e:
                self.error = f"gzip member at file byte {self.file_starts[-1]} is corrupt near byte {self.read_total}"
                self.error += f" ({e})"
                self.done = True
                break
            if self.d.eof:
                self.pending, self.d = self.d.unused_data, None
            else:
                self.pending = self.d.unconsumed_tail
            if data:
                b[: len(data)] = data
                self.out += len(data)
                return len(data)
            if not chunk and self.d is not None:
                self.error = f"gzip member at file byte {self.file_starts[-1]} cut short at file byte {self.read_total}"
                self.done = True
        return 0

    def file_offset(self, pos: int) -> int:
        i = bisect.bisect_right(self.starts, pos) - 1
        return self.file_starts[i] if i >= 0 else 0


class _Lines:
    """readline()/read() over a binary stream with one line of push-back and a byte position."""

    def __init__(self, f, gz: _Gunzip | None):
        self.f, self.gz, self.pushed, self.pos = f, gz, b"", 0
        self.reported = False  # a record already carries the gzip stream's error

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

    def file_offset(self, pos: int) -> int:
        return self.gz.file_offset(pos) if self.gz is not None else pos

    def broken(self) -> str:
        """Why the input ended here: the gzip stream's error, or the end of the file."""
        if self.gz is not None and self.gz.error:
            return self.gz.error
        return f"the input ends at byte {self.pos}"


def _is_warc_line(line: bytes) -> bool:
    return line.startswith(b"WARC/") and len(line) < 32


def _is_arc_line(line: bytes) -> bool:
    return _ARC_LINE.fullmatch(line) is not None


# How each format's records start: a test for a line, and a pattern for a start inside a block.
_WARC = (_is_warc_line, _WARC_START)
_ARC = (_is_arc_line, _ARC_START)


def iter_records(path: str, max_record_bytes: int = 1 << 27) -> Iterator[Record]:
    """Every record of a WARC, WET or ARC file; malformed parts come out as records with `error` set."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed through the stream below)
    except OSError as e:
        yield Record(0, error=f"cannot open: {e}")
        return
    gz = _Gunzip(f) if f.read(2) == b"\x1f\x8b" else None
    f.seek(0)
    stream = io.BufferedReader(gz, 1 << 16) if gz is not None else f
    r = _Lines(stream, gz)
    try:
        first = _skip_blank(r)
        r.unread(first)
        parse = _parse_arc if first.startswith(b"filedesc://") else _parse_warc
        yield from parse(r, max_record_bytes)
        if gz is not None and gz.error and not r.reported:  # broken where no record was being read
            yield Record(r.pos, error=f"the stream broke after the last whole record: {gz.error}", reason=TRUNCATED)
    except OSError as e:  # a read error of the file itself
        yield Record(r.pos, error=f"read error at byte {r.pos}: {e}")
    finally:
        stream.close()


def _skip_blank(r: _Lines) -> bytes:
    line = r.readline(MAX_HEADER_BYTES)
    while line in (b"\r\n", b"\n"):
        line = r.readline(MAX_HEADER_BYTES)
    return line


def _parse_warc(r: _Lines, max_record_bytes: int) -> Iterator[Record]:
    while True:
        line = _skip_blank(r)
        if not line:
            return
        start = r.pos - len(line)
        at = r.file_offset(start)
        if not _is_warc_line(line):
            skipped = _skip_to(r, _is_warc_line)
            yield Record(start, error=f"garbage between records ({skipped + len(line)} bytes skipped)", file_offset=at)
            continue
        headers, ok, size = {}, True, 0
        while True:
            h = r.readline(MAX_HEADER_BYTES)
            size += len(h)
            if not h:
                r.reported = True
                yield Record(start, headers, truncated=f"input ends inside the header: {r.broken()}", file_offset=at)
                return
            if h in (b"\r\n", b"\n"):
                break
            if size > MAX_HEADER_BYTES or b":" not in h:
                ok = False
                break
            name, _, value = h.decode("utf-8", "replace").partition(":")
            headers[name.strip().lower()] = value.strip()
        if not ok:
            _skip_to(r, _is_warc_line)
            yield Record(start, headers, error="malformed record header", file_offset=at)
            continue
        try:
            length = int(headers.get("content-length", ""))
            if length < 0:
                raise ValueError
        except ValueError:
            _skip_to(r, _is_warc_line)
            yield Record(start, headers, error=f"bad Content-Length {headers.get('content-length')!r}", file_offset=at)
            continue
        yield _read_block(r, Record(start, headers, file_offset=at), length, max_record_bytes, _WARC)


def _arc_headers(line: bytes, version: int) -> dict[str, str]:
    """An ARC header line under WARC header names (v1: URL IP date type length; v2 adds five fields)."""
    fields = line.decode("utf-8", "replace").rstrip("\r\n").split(" ")
    n = 10 if version == 2 and len(fields) >= 10 else 5
    url = " ".join(fields[: len(fields) - n + 1])  # v1 URLs may hold spaces
    date = fields[2 - n][:14].ljust(14, "0")
    return {
        "warc-type": "warcinfo" if url.startswith("filedesc:") else "response",
        "warc-target-uri": url,
        "warc-ip-address": fields[1 - n],
        "warc-date": f"{date[:4]}-{date[4:6]}-{date[6:8]}T{date[8:10]}:{date[10:12]}:{date[12:14]}Z",
        "content-type": fields[3 - n],
        "content-length": fields[-1],
    }


def _parse_arc(r: _Lines, max_record_bytes: int) -> Iterator[Record]:
    version = 1
    while True:
        line = _skip_blank(r)
        if not line:
            return
        start = r.pos - len(line)
        at = r.file_offset(start)
        if not _is_arc_line(line):
            skipped = _skip_to(r, _is_arc_line)
            yield Record(start, error=f"garbage between records ({skipped + len(line)} bytes skipped)", file_offset=at)
            continue
        headers = _arc_headers(line, version)
        try:
            length = int(headers["content-length"])
            if length < 0:
                raise ValueError
        except ValueError:
            _skip_to(r, _is_arc_line)
            yield Record(start, headers, error=f"bad ARC length {headers['content-length']!r}", file_offset=at)
            continue
        rec = _read_block(r, Record(start, headers, file_offset=at), length, max_record_bytes, _ARC)
        if rec.type == "warcinfo":  # the version block: "<major> <minor> <origin>"
            m = re.match(rb"\s*(\d+)", rec.block)
            version = int(m.group(1)) if m else version
        yield rec


def _read_block(r: _Lines, rec: Record, length: int, max_record_bytes: int, syntax: tuple) -> Record:
    if length > max_record_bytes:
        _discard(r, length)
        rec.error, rec.reason = f"record of {length} bytes over max_record_bytes {max_record_bytes}", TOO_LARGE
        return rec
    rec.block = r.read(length)
    if len(rec.block) < length:
        if r.gz is not None and not r.gz.error:
            # The gzip stream ended whole (every member complete): the length overstated the last block.
            rec.block = rec.block.rstrip(b"\r\n")
            rec.repaired = f"length {length} ran past the end of the file ({len(rec.block)} bytes)"
        else:
            rec.truncated = f"block cut short after {len(rec.block)} of {length} bytes: {r.broken()}"
            r.reported = True
        return rec
    _check_end(r, rec, length, max_record_bytes, syntax)
    return rec


def _check_end(r: _Lines, rec: Record, length: int, max_record_bytes: int, syntax: tuple) -> None:
    """The block must be followed by blank lines (or nothing, in ARC files) and then the next record or the end
    of the file; if not, the length was wrong, and the block is cut or extended to where the next record
    really starts."""
    is_start, start_inside = syntax
    block = rec.block
    tail = r.readline(MAX_HEADER_BYTES)
    extra = b""
    while tail in (b"\r\n", b"\n"):
        extra += tail
        tail = r.readline(MAX_HEADER_BYTES)
    if not tail:
        return
    if is_start(tail):
        r.unread(tail)
        return
    look = block + extra + tail
    inner = start_inside.search(look)
    if inner and inner.start() < len(block):  # the length was too long: the next record starts inside
        r.unread(look[inner.start(1) :])
        rec.block = look[: inner.start()].rstrip(b"\r\n")
        rec.repaired = f"length {length} ran past the block ({len(rec.block)} bytes)"
        return
    more = [extra, tail]  # the length was too short: the block runs on to the next record
    while True:
        line = r.readline(1 << 20)
        if not line or is_start(line):
            break
        more.append(line)
        if sum(map(len, more)) > max_record_bytes:
            break
    rec.block = (block + b"".join(more)).rstrip(b"\r\n")
    rec.repaired = f"length {length} did not end the block ({len(rec.block)} bytes read)"
    if line:
        r.unread(line)


def _skip_to(r: _Lines, is_start: Callable) -> int:
    skipped = 0
    while True:
        line = r.readline(1 << 20)
        if not line:
            return skipped
        if is_start(line):
            r.unread(line)
            return skipped
        skipped += len(line)


def _discard(r: _Lines, n: int) -> None:
    while n > 0:
        got = r.read(min(n, 1 << 20))
        if not got:
            return
        n -= len(got)


# ---------------------------------------------------------------- HTTP responses

NOT_HTTP, BAD_ENCODING = "not an HTTP response", "undecodable Content-Encoding"
_HEAD_END = re.compile(rb"\r?\n\r?\n")  # the first blank line, whatever the line ends
_IDENTITY = ("", "identity", "none", "utf-8", "utf8", "binary", "8bit", "7bit")


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    error: str = ""
    reason: str = ""  # the drop reason that goes with `error`: MALFORMED, NOT_HTTP or BAD_ENCODING
    note: str = ""  # something worth counting that did not stop the response ("" if nothing)


def parse_http(block: bytes, max_bytes: int) -> HttpResponse:
    """Split an HTTP response into status, headers and a decoded body: chunked transfer and the content
    encodings gzip, deflate, br and zstd undone, with `max_bytes` as a cap on decompression so a compression
    bomb cannot exhaust memory. The headers end at the first blank line, CRLF or bare LF: old servers end their
    headers with LF over a body with CRLF line ends, and the first CRLF blank line is then inside the body."""
    block = block.lstrip(b"\r\n")
    if not block.startswith(b"HTTP/"):
        return HttpResponse(0, {}, b"", f"starts with {block[:24]!r}", NOT_HTTP)
    m = _HEAD_END.search(block)
    if m is None:
        return HttpResponse(0, {}, b"", "no end of HTTP headers", MALFORMED)
    head, body = block[: m.start()], block[m.end() :]
    lines = head.decode("latin-1").split("\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return HttpResponse(0, {}, b"", f"bad HTTP status line {lines[0].strip()[:80]!r}", MALFORMED)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    note = ""
    codings = [c.strip() for c in headers.get("content-encoding", "").lower().split(",")]
    for coding in reversed([c for c in codings if c not in _IDENTITY]):  # applied in the order listed
        try:
            out = _decode(body, coding, max_bytes)
        except (ValueError, OSError, zlib.error) as e:
            if coding not in _DECODERS:
                return HttpResponse(status, headers, b"", f"unsupported Content-Encoding {coding!r}", BAD_ENCODING)
            # Crawlers often store the decoded body with the header left in: keep it as stored (the extract
            # step drops it as binary if it really was compressed).
            note = f"{coding} body stored decoded ({type(e).__name__})"
            continue
        if len(out) > max_bytes:
            return HttpResponse(status, headers, b"", f"{coding} body inflates past {max_bytes} bytes", BAD_ENCODING)
        body = out
    return HttpResponse(status, headers, body, note=note)


def _inflate(body: bytes, wbits: int, cap: int) -> bytes:
    return zlib.decompressobj(wbits).decompress(body, cap)


def _deflate(body: bytes, cap: int) -> bytes:
    try:
        return _inflate(body, 15, cap)  # zlib-wrapped, as the RFC says
    except zlib.error:
        return _inflate(body, -15, cap)  # raw deflate, as many servers send


def _brotli(body: bytes, cap: int) -> bytes:
    import brotli

    try:
        return brotli.Decompressor().process(body, output_buffer_limit=cap)
    except brotli.error as e:
        raise ValueError(str(e)) from None


def _zstd(body: bytes, cap: int) -> bytes:
    import pyarrow as pa  # pyarrow bundles zstd and streams a frame of unknown size

    try:
        return pa.CompressedInputStream(pa.BufferReader(body), "zstd").read(cap)
    except pa.ArrowException as e:
        raise ValueError(str(e)) from None


_DECODERS = {
    "gzip": lambda b, cap: _inflate(b, 47, cap),  # 47: gzip or zlib header, auto-detected
    "x-gzip": lambda b, cap: _inflate(b, 47, cap),
    "deflate": _deflate,
    "br": _brotli,
    "zstd": _zstd,
}


def _decode(body: bytes, coding: str, max_bytes: int) -> bytes:
    if coding not in _DECODERS:
        raise ValueError(coding)
    return _DECODERS[coding](body, max_bytes + 1)


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
