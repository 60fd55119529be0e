"""The archive parser on hostile input: header splits, cut gzip members, wrong lengths, ARC files, content
encodings, and the read step's reasons for records that are not pages."""

import gzip
import random
import zlib

import brotli
import pyarrow as pa

from data.base import Env, Task
from data.readers import ReadConfig, Reader
from data.runner import plan_tasks
from data.tests.helpers import run_pipeline
from data.warc import BAD_ENCODING, MALFORMED, NOT_HTTP, iter_records, parse_http
from tools import assets


def record(uri, block: bytes, rid, rtype="response", version="WARC/1.0", nl="\r\n", length=None) -> bytes:
    ctype = "application/http; msgtype=response" if rtype == "response" else "text/plain"
    head = [version, f"WARC-Type: {rtype}", f"WARC-Record-ID: <{rid}>", f"WARC-Target-URI: {uri}"]
    head += ["WARC-Date: 2009-03-01T00:00:00Z", f"Content-Type: {ctype}"]
    head += [f"Content-Length: {len(block) if length is None else length}"]
    return (nl.join(head) + nl + nl).encode() + block + (nl + nl).encode()


def http(body: bytes, status="200 OK", headers=("Content-Type: text/html",), nl="\r\n") -> bytes:
    return (nl.join([f"HTTP/1.1 {status}", *headers]) + nl + nl).encode() + body


def prose(seed: int, n: int) -> bytes:
    return bytes(random.Random(seed).choices(b"abcdefghij klmnop\r\n", k=n))


def read(paths, tmp_path, **cfg):
    env = Env(output=tmp_path, work=tmp_path, tasks=plan_tasks([(p, p.name) for p in paths], 0), cfg=None)
    task = Task(0)
    docs = list(Reader(ReadConfig(**cfg), env)(iter(()), task))
    return docs, task.step_stats("read")


def test_lf_headers_over_a_crlf_body():
    """Headers end at the first blank line, bare LF or CRLF: a CRLF blank line inside the body is not it."""
    body = b"<html>\r\n<head><title>t</title>\r\n\r\n<meta charset=euc-jp></head>\r\n<body>\r\n\r\nmain text</body>\r\n"
    resp = parse_http(http(body, headers=("Content-Type: text/html; charset=EUC-JP", "Server: old"), nl="\n"), 1 << 20)
    assert resp.status == 200 and resp.body == body
    assert resp.headers == {"content-type": "text/html; charset=EUC-JP", "server": "old"}
    # and the other way round: CRLF headers, a body with bare-LF blank lines
    lf_body = b"<p>a</p>\n\n<p>b</p>\n"
    assert parse_http(http(lf_body), 1 << 20).body == lf_body
    assert parse_http(b"<html>no status line</html>", 100).reason == NOT_HTTP
    assert parse_http(b"HTTP/1.1 200 OK\r\nServer: x", 100).reason == MALFORMED


def test_content_encodings_and_their_caps():
    page = b"<html><body>" + b"brotli and zstd pages " * 200 + b"</body></html>"
    for coding, data in (
        ("br", brotli.compress(page)),
        ("zstd", pa.compress(page, codec="zstd", asbytes=True)),
        ("gzip", gzip.compress(page)),
        ("deflate", zlib.compress(page)),
        ("deflate", zlib.compress(page)[2:-4]),  # raw deflate, as many servers send it
        ("gzip, br", brotli.compress(gzip.compress(page))),  # applied in the order listed
    ):
        resp = parse_http(http(data, headers=(f"Content-Encoding: {coding}",)), 1 << 20)
        assert (resp.error, resp.body) == ("", page), coding
    bomb = brotli.compress(b"\0" * (8 << 20))
    assert parse_http(http(bomb, headers=("Content-Encoding: br",)), 1 << 20).reason == BAD_ENCODING
    assert parse_http(http(page, headers=("Content-Encoding: compress",)), 1 << 20).reason == BAD_ENCODING
    stored = parse_http(http(page, headers=("Content-Encoding: br",)), 1 << 20)  # stored decoded, header left in
    assert stored.body == page and stored.note.startswith("br body stored decoded")


def test_a_gzip_member_cut_short(tmp_path):
    blocks = [http(prose(i, 20000)) for i in range(3)]
    members = [gzip.compress(record(f"http://example.com/{i}", b, f"urn:x{i}")) for i, b in enumerate(blocks)]
    cut_at = len(members[0]) + len(members[1]) + len(members[2]) // 2
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(b"".join(members)[:cut_at])
    recs = list(iter_records(str(path)))
    assert [r.block for r in recs[:2]] == blocks[:2] and not recs[0].truncated
    last = recs[2]
    assert len(recs) == 3 and last.file_offset == len(members[0]) + len(members[1])
    assert 1000 < len(last.block) < len(blocks[2]) and blocks[2].startswith(last.block)
    assert last.truncated.endswith(f"gzip member at file byte {last.file_offset} cut short at file byte {cut_at}")
    docs, st = read([path], tmp_path)
    assert len(docs) == 2 and st.dropped == {"truncated record": 1}
    kept, st = read([path], tmp_path, truncated="keep")
    assert len(kept) == 3 and kept[2].meta == {"truncated": True} and st.counters["truncated records kept"] == 1
    assert kept[2].raw == last.block.split(b"\r\n\r\n", 1)[1]
    # Cut inside the last member's gzip header: nothing of its record comes out, the break is still counted.
    path.write_bytes(b"".join(members)[: len(members[0]) + len(members[1]) + 5])
    recs = list(iter_records(str(path)))
    assert len(recs) == 3 and recs[2].error.startswith("the stream broke after the last whole record")
    _, st = read([path], tmp_path)
    assert st.docs_out == 2 and st.dropped == {"truncated record": 1}


def test_the_truncation_detail_names_record_url_and_offset(tmp_path):
    members = [gzip.compress(record(f"http://example.com/{i}", http(prose(i, 9000)), f"urn:x{i}")) for i in range(2)]
    path = tmp_path / "t.warc.gz"
    path.write_bytes(members[0] + members[1][:-300])
    out = tmp_path / "out"
    summary = run_pipeline(out, [f"input={path}", "steps=[read]", "executor=inline"])
    assert summary["funnel_ok"] and summary["steps"]["read"]["dropped"] == {"truncated record": 1}
    detail = (out / "dropped" / "seg-00-shard-00000.jsonl").read_text()
    assert f"record urn:x1 (http://example.com/1) at file byte {len(members[0])}: block cut short" in detail


def test_clueweb_style_warc_0_18(tmp_path):
    """WARC/0.18, LF line ends, lengths that count bytes the file no longer has (ClueWeb09's quirks)."""
    pages = [http(b"<html>\r\n<body>\r\n\r\n" + prose(i, 3000) + b"</body></html>", nl="\n") for i in range(3)]
    recs = [
        record("http://a.jp/0", pages[0], "urn:c0", version="WARC/0.18", nl="\n", length=len(pages[0]) + 40),
        record("http://a.jp/1", pages[1], "urn:c1", version="WARC/0.18", nl="\n"),
        record("http://a.jp/2", pages[2], "urn:c2", version="WARC/0.18", nl="\n", length=len(pages[2]) + 40),
    ]
    gz = tmp_path / "cw.warc.gz"
    gz.write_bytes(b"".join(gzip.compress(r) for r in recs))
    got = list(iter_records(str(gz)))
    assert [r.block for r in got] == pages and [bool(r.repaired) for r in got] == [True, False, True]
    assert not any(r.truncated or r.error for r in got)  # the gzip stream ended whole: the length was wrong
    docs, _ = read([gz], tmp_path)
    assert [d.raw for d in docs] == [p.split(b"\n\n", 1)[1] for p in pages]
    plain = tmp_path / "cw.warc"  # without gzip the end of the file cannot tell a wrong length from a cut
    plain.write_bytes(b"".join(recs))
    assert [bool(r.truncated) for r in iter_records(str(plain))] == [False, False, True]


def arc(records, version_block=b"1 0 test\nURL IP-address Archive-date Content-type Archive-length\n", sep=True):
    head = f"filedesc://t.arc 0.0.0.0 20080101000000 text/plain {len(version_block)}\n".encode()
    out = [head + version_block + b"\n"]
    for url, ctype, body in records:
        out.append(f"{url} 192.0.2.1 20080102030405 {ctype} {len(body)}\n".encode() + body + (b"\n" if sep else b""))
    return out


def test_arc_files(tmp_path):
    page = http(b"<html><body>an old page</body></html>")
    records = [
        ("dns:example.com", "text/dns", b"20080102030405\nexample.com. 300 IN A 192.0.2.1\n"),
        ("http://example.com/a?title=With Spaces&x=1", "text/html", http(b"no", status="400 Bad Request", nl="\n")),
        ("http://example.com/", "text/html", page),
        ("http://example.com/gone", "text/html", http(b"<html>gone</html>", status="404 Not Found")),
        ("http://example.com/b", "text/html", page.replace(b"an old", b"another")),
    ]
    for sep in (True, False):  # records followed by their newline, or not
        path = tmp_path / f"t{sep}.arc"
        path.write_bytes(b"".join(arc(records, sep=sep)))
        docs, st = read([path], tmp_path)
        assert [(d.url, d.date, d.raw) for d in docs] == [
            ("http://example.com/", "2008-01-02T03:04:05Z", b"<html><body>an old page</body></html>"),
            ("http://example.com/b", "2008-01-02T03:04:05Z", b"<html><body>another page</body></html>"),
        ]
        assert st.dropped == {"HTTP status not 200": 2} and st.counters["skipped dns: records"] == 1
        assert st.counters["skipped warcinfo records"] == 1 and not st.counters["repaired records"]
    gz = tmp_path / "t.arc.gz"  # gzip per record, as the Internet Archive writes them
    gz.write_bytes(b"".join(gzip.compress(m) for m in arc(records)))
    assert [d.url for d in read([gz], tmp_path)[0]] == ["http://example.com/", "http://example.com/b"]
    assert [r.file_offset for r in iter_records(str(gz))][1] == len(gzip.compress(arc(records)[0]))
    # ARC v2: five more fields between the content type and the length
    v2 = b"2 0 test\nURL IP-address Archive-date Content-type Result-code Checksum Location Offset Filename "
    v2 += b"Archive-length\n"
    body = http(b"<html>v2</html>")
    line = f"http://example.org/ 192.0.2.1 20080102030405 text/html 200 SHA1 - 0 t.arc {len(body)}\n".encode()
    path = tmp_path / "v2.arc"
    path.write_bytes(arc([], version_block=v2)[0] + line + body + b"\n")
    assert [(d.url, d.raw) for d in read([path], tmp_path)[0]] == [("http://example.org/", b"<html>v2</html>")]
    # warcio's broken ARC: -1 and non-numeric lengths are malformed, a one-byte block is no HTTP response
    _, st = read([assets.path("web/warcio-broken/bad.arc")], tmp_path)
    assert st.docs_in == 3 and st.dropped == {"malformed record": 2, "not an HTTP response": 1}
    assert st.counters["skipped warcinfo records"] == 1 and st.counters["unreadable warcinfo records"] == 1


def test_each_kind_of_non_page_has_its_own_reason(tmp_path):
    page = b"<html><body><p>" + b"A page with enough words to be kept by the extractor. " * 5 + b"</p></body></html>"
    recs = [
        record("dns:example.com", b"20240101\nexample.com. 300 IN A 192.0.2.1\n", "urn:d", rtype="response"),
        record("http://example.com/", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "urn:q", rtype="request"),
        record("metadata://gnu.org/software/wget/warc/wget_arguments.txt", b"wget -r", "urn:m", rtype="resource"),
        record("http://example.com/secret", http(b"<html>no</html>", status="403 Forbidden"), "urn:f"),
        record("http://example.com/a.png", http(b"\x89PNG\r\n\x1a\n", headers=("Content-Type: image/png",)), "urn:i"),
        record("http://example.com/raw", b"<html>no status line</html>", "urn:n"),
        record("http://example.com/br", http(brotli.compress(page), headers=("Content-Encoding: br",)), "urn:b"),
    ]
    path = tmp_path / "mixed.warc.gz"
    path.write_bytes(b"".join(gzip.compress(r) for r in recs))
    out = tmp_path / "out"
    summary = run_pipeline(out, [f"input={path}", "steps=[read,extract]", "executor=inline", "extract.sandbox=false"])
    assert summary["funnel_ok"] and summary["documents_in"] == 4 and summary["documents_kept"] == 1
    st = summary["steps"]
    assert st["read"]["dropped"] == {"HTTP status not 200": 1, "not an HTTP response": 1}
    assert st["extract"]["dropped"] == {"not a text content type": 1}
    counters = st["read"]["counters"]
    assert counters["skipped dns: records"] == counters["skipped metadata: records"] == 1
    assert counters["skipped request records"] == counters["http status 403"] == 1
