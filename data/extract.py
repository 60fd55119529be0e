"""HTML -> text: main content without boilerplate, code blocks and math kept, markdown markers removed.

The engine is trafilatura (favouring recall) by default, or resiliparse: data/README.md gives the scored
extraction set, each engine's precision / recall / F1 and speed, and the rule that picked the default. It runs in
a sandbox process: each page gets `timeout_s`, and a page that hangs or crashes the parser (HTML bombs,
pathological nesting) kills only the sandbox, which is restarted; the page is dropped with the reason. A process
keeps its sandbox from task to task (shared_sandbox). Decoding (charset from HTTP, <meta>, or detection), binary
sniffing and size limits happen before.

Math: MathJax `<script type="math/tex">` and MathML (its TeX annotation or alttext) become $...$ / $$...$$;
KaTeX/MathJax rendered duplicates are skipped. Code: blocks the engine marks (resiliparse's <pre>, trafilatura's
markdown fences) are kept verbatim while markdown markers (# headings, **bold**, [links](...), ``` fences,
> quotes, --- rules; with trafilatura also *italics*, list bullets and table rules) are removed from the rest.
"""

from __future__ import annotations

import os
import pickle
import re
import select
import struct
import subprocess
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import util

from data.base import Step, Task, batched
from data.document import Document
from data.html2text import ENGINES, FAVOR, _tidy, extract_html


@dataclass
class ExtractConfig:
    engine: str = "trafilatura"  # trafilatura | resiliparse
    favor: str = "recall"  # trafilatura: precision | balanced (its own default) | recall
    main_content: bool = True  # resiliparse: its main-content heuristics (drops navigation, footers, ...)
    trim: bool = False  # resiliparse: keep only the densest run of text blocks (html2text.trim_blocks)
    timeout_s: float = 5.0  # per page; a page over it is dropped and the sandbox restarted
    sandbox: bool = True  # False runs the engine in-process (no time limit; for debugging only)
    sandbox_memory_mb: int = 4096  # address-space limit of the sandbox process
    max_bytes: int = 8 << 20  # pages larger than this are dropped ("page too large")
    max_chars: int = 2_000_000  # extracted text beyond this is cut
    strip_markdown: bool = True
    batch: int = 32  # pages sent to the sandbox at a time
    start_timeout_s: float = 60.0  # for a (re)started sandbox to import its engine, before any page's clock


TEXT_TYPES = ("text/plain", "text/x-", "text/markdown")
HTML_TYPES = ("text/html", "application/xhtml", "application/xml", "text/xml")
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def charset_of(content_type: str) -> str:
    m = re.search(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", content_type, re.I)
    return m.group(1).lower() if m else ""


def looks_binary(raw: bytes) -> bool:
    """NUL bytes or many control characters in the first 4 KB: not text, whatever the header claims."""
    head = raw[:4096]
    if b"\x00" in head:
        return True
    control = sum(
        head.count(bytes([c]))
        for c in (1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 127)
    )
    return control > 0.02 * max(len(head), 1)


def decode(raw: bytes, content_type: str) -> tuple[str, str]:
    """(text, how): UTF-8 when valid; else the declared charset (HTTP header or <meta>) unless it claims UTF-8,
    which invalid bytes prove wrong, in which case the charset is detected; a page detected as UTF-8 all the
    same is decoded with its invalid bytes replaced."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    declared = charset_of(content_type)
    if not declared:
        m = _CHARSET.search(raw[:4096])
        declared = m.group(1).decode("ascii", "replace").lower() if m else ""
    enc = declared if declared not in ("", "utf-8", "utf8") else detect_encoding(raw)
    if enc.lower() in ("utf-8", "utf8"):
        return raw.decode("utf-8", "replace"), "invalid utf-8"
    try:
        return bytes_to_str(raw, enc, errors="replace"), enc
    except (LookupError, UnicodeError):
        return raw.decode("utf-8", "replace"), "invalid utf-8"


class Sandbox:
    """A child process that extracts one page at a time, killed and restarted when a page overruns. It imports
    `engine` and says so before it is given pages, so that a page's time limit is not spent on the import."""

    def __init__(self, memory_mb: int, engine: str = "", start_timeout_s: float = 60.0):
        self.memory_mb = memory_mb
        self.engine = engine
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
            HERD_SANDBOX_MEMORY_MB=str(self.memory_mb),
            HERD_SANDBOX_ENGINE=self.engine,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from data.html2text import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], self.start_timeout_s)
        if not ready or pickle.loads(self._read(struct.unpack("<Q", self._read(8))[0]))[0] != "ready":
            raise EOFError  # run() counts it as a crash of the page it was started for

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()  # the child's loop ends at end of input
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.proc.stdout.read(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def run(self, pages: list[str], opts: dict, timeout: float) -> list[tuple[str, str]]:
        """Per page ("ok", text) | ("error", message) | ("timeout", "") | ("crash", message). Pages stream
        through the child; each has `timeout` seconds from the previous result, and after a timeout or crash
        the child is restarted for the remaining pages."""
        try:
            return self._run(pages, opts, timeout)
        except BaseException:  # e.g. KeyboardInterrupt: replies may be left in the pipe, so start afresh next time
            self.kill()
            raise

    def _run(self, pages: list[str], opts: dict, timeout: float) -> list[tuple[str, str]]:
        results: list[tuple[str, str]] = []
        while len(results) < len(pages):
            data = pickle.dumps((pages[len(results) :], opts), protocol=5)
            try:
                if self.proc is None:
                    self._start()
                view = memoryview(struct.pack("<Q", len(data)) + data)
                while view:  # unbuffered pipe: write() may take only part of it
                    view = view[self.proc.stdin.write(view) :]
                while len(results) < len(pages):
                    ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
                    if not ready:
                        self.kill()
                        self.restarts += 1
                        results.append(("timeout", ""))
                        break
                    size = struct.unpack("<Q", self._read(8))[0]
                    results.append(pickle.loads(self._read(size)))
            except (BrokenPipeError, EOFError, OSError):
                code = self.proc.poll() if self.proc else None
                self.kill()
                self.restarts += 1
                results.append(("crash", f"exit code {code}"))
        return results


_SHARED: dict[tuple, Sandbox] = {}


def shared_sandbox(memory_mb: int, engine: str, start_timeout_s: float) -> Sandbox:
    """This process's sandbox for these settings. A task builds its steps anew, and a sandbox start costs an
    interpreter and the engine's import (0.05 s with resiliparse, 0.5 s with trafilatura), so the sandbox outlives
    the task; it is closed (its process ended and waited for) when this process exits, worker processes of
    multiprocessing included. A forked child starts its own (the key holds the process id)."""
    key = (os.getpid(), memory_mb, engine, start_timeout_s)
    if key not in _SHARED:
        _SHARED[key] = box = Sandbox(memory_mb, engine, start_timeout_s)
        util.Finalize(None, box.close, exitpriority=0)  # run at exit by multiprocessing, in any process
    return _SHARED[key]


class Extract(Step):
    name = "extract"

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.engine not in ENGINES:
            raise ValueError(f"extract.engine must be one of {', '.join(ENGINES)}, got '{cfg.engine}'")
        if cfg.favor not in FAVOR:
            raise ValueError(f"extract.favor must be one of {', '.join(FAVOR)}, got '{cfg.favor}'")
        self.sandbox = shared_sandbox(cfg.sandbox_memory_mb, cfg.engine, cfg.start_timeout_s) if cfg.sandbox else None
        self.opts = {
            "engine": cfg.engine,
            "main_content": cfg.main_content,
            "markdown": cfg.strip_markdown,
            "favor": cfg.favor,
            "trim": cfg.trim,
        }

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        st = task.step_stats(self.name)
        restarts = self.sandbox.restarts if self.sandbox is not None else 0
        try:
            for batch in batched(docs, self.cfg.batch):
                yield from self.run_batch(batch, task, st)
        finally:
            if self.sandbox is not None:
                st.counters["sandbox restarts"] += self.sandbox.restarts - restarts

    def run_batch(self, batch: list[Document], task: Task, st) -> Iterator[Document]:
        verdicts: list = [None] * len(batch)
        pages: list[tuple[int, str]] = []  # (position in batch, decoded HTML) for the engine
        for i, doc in enumerate(batch):
            if doc.raw is not None:
                verdicts[i] = self.check(doc, st)
                if verdicts[i] == "html":
                    pages.append((i, doc.text))
                    doc.text = ""
        if pages:
            if self.sandbox is None:
                outs = []
                for _, page in pages:
                    try:
                        outs.append(("ok", extract_html(page, **self.opts)))
                    except Exception as e:
                        outs.append(("error", f"{type(e).__name__}: {str(e)[:200]}"))
            else:
                outs = self.sandbox.run([p for _, p in pages], self.opts, self.cfg.timeout_s)
            for (i, _), (status, out) in zip(pages, outs, strict=True):
                verdicts[i] = None
                if status == "ok":
                    batch[i].text = out
                elif status == "timeout":
                    verdicts[i] = ("extraction timeout", f"over {self.cfg.timeout_s} s")
                elif status == "crash":
                    verdicts[i] = ("extraction crashed", out)
                else:
                    verdicts[i] = ("extraction failed", out)
        for doc, verdict in zip(batch, verdicts):
            doc.raw = None
            if verdict is not None:
                task.drop(doc, self.name, *verdict)
                continue
            if len(doc.text) > self.cfg.max_chars:
                doc.text = doc.text[: self.cfg.max_chars]
                st.counters["texts cut at max_chars"] += 1
            if not doc.text.strip():
                task.drop(doc, self.name, "empty after extraction")
            else:
                yield doc

    def check(self, doc: Document, st) -> tuple[str, str] | str | None:
        """Checks and decoding before the engine: a drop reason, "html" (doc.text holds the decoded page for
        the engine), or None (doc.text is final: plain text)."""
        raw, mtype = doc.raw, media_type(doc.content_type)
        if len(raw) > self.cfg.max_bytes:
            return "page too large", f"{len(raw)} bytes > max_bytes {self.cfg.max_bytes}"
        is_html = mtype.startswith(HTML_TYPES) or (not mtype and raw[:1024].lstrip()[:1] == b"<")
        if not is_html and not mtype.startswith(TEXT_TYPES):
            return "not a text content type", mtype or "none"
        if looks_binary(raw):
            return "binary content", mtype
        text, how = decode(raw, doc.content_type)
        if how != "utf-8":
            st.counters[f"decoded as {how}"] += 1
        if is_html:
            doc.text = text
            return "html"
        doc.text = _tidy(text.replace("\r\n", "\n"))
        return None


# Scoring against expected main text: the scored set (third_party/data/web/extraction/expected.jsonl) names a
# vendored page (file, and the record's URL inside a WARC) and the main text a reader finds in it.

SCORED_SET = "web/extraction/expected.jsonl"
SETTINGS = {  # the settings bench_extract measures and the default is chosen from (data/README.md)
    "resiliparse, main content": {"engine": "resiliparse", "main_content": True},
    "resiliparse, main content + trim": {"engine": "resiliparse", "main_content": True, "trim": True},
    "resiliparse, all text": {"engine": "resiliparse", "main_content": False},
    "resiliparse, all text + trim": {"engine": "resiliparse", "main_content": False, "trim": True},
    "trafilatura, favor precision": {"engine": "trafilatura", "favor": "precision"},
    "trafilatura, balanced": {"engine": "trafilatura", "favor": "balanced"},
    "trafilatura, favor recall": {"engine": "trafilatura", "favor": "recall"},
}
SPEEDUP, MARGIN = 5.0, 0.02  # the rule of choose_default


def choose_default(results: dict[str, dict]) -> tuple[str, str]:
    """The rule that picks the default from {setting: {"f1": ..., "dps": docs/s}}: the best-F1 setting at least
    SPEEDUP x faster than trafilatura, if its F1 is within MARGIN of trafilatura's; else trafilatura. Its best
    trafilatura setting is the reference for both. Returns (setting, why)."""
    ref = max((n for n in results if SETTINGS[n]["engine"] == "trafilatura"), key=lambda n: results[n]["f1"])
    bar = SPEEDUP * results[ref]["dps"]
    fast = [n for n in results if SETTINGS[n]["engine"] != "trafilatura" and results[n]["dps"] >= bar]
    best = max(fast, key=lambda n: results[n]["f1"], default=None)
    if best is not None and results[best]["f1"] >= results[ref]["f1"] - MARGIN:
        return best, f"F1 {results[best]['f1']:.3f} within {MARGIN} of '{ref}' ({results[ref]['f1']:.3f})"
    if best is None:
        return ref, f"no other setting reaches {bar:.0f} docs/s ({SPEEDUP:g}x '{ref}')"
    return ref, (
        f"the best setting over {bar:.0f} docs/s ({SPEEDUP:g}x '{ref}'), '{best}', has F1 "
        f"{results[best]['f1']:.3f}, more than {MARGIN} below '{ref}' ({results[ref]['f1']:.3f})"
    )


_IDEOGRAPHS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana and CJK ideographs
_TOKEN = re.compile(rf"[{_IDEOGRAPHS}]|[^\W{_IDEOGRAPHS}]+")


def tokens(text: str) -> list[str]:
    """Words for scoring: NFKC, case-folded, runs of letters and digits; each kana or CJK ideograph is a token
    of its own (Chinese and Japanese put no spaces between words), punctuation and markup are not tokens."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def shingles(text: str, n: int = 4) -> Counter:
    """The multiset of word n-grams; a text shorter than n words is one shingle."""
    w = tokens(text)
    return Counter(tuple(w[i : i + n]) for i in range(max(1, len(w) - n + 1))) if w else Counter()


def score(expected: str, got: str) -> tuple[float | None, float]:
    """(precision, recall) of the extracted text's 4-gram shingles against the expected text's, counting
    repeats; precision is None for an empty extraction (it keeps no boilerplate, and loses all recall)."""
    want, have = shingles(expected), shingles(got)
    if not want:
        raise ValueError("expected text has no words to score against")
    hit = sum((want & have).values())
    return (hit / sum(have.values()) if have else None), hit / sum(want.values())


def summarize(scores: list[tuple[float | None, float]]) -> tuple[float, float, float]:
    """Mean precision (over pages with output), mean recall (over all pages), and F1 of the two means, the
    way article-extraction benchmarks report it."""
    precisions = [p for p, _ in scores if p is not None]
    p = sum(precisions) / len(precisions) if precisions else 0.0
    r = sum(rec for _, rec in scores) / len(scores)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def scored_pages() -> list[tuple[dict, str]]:
    """(record of the scored set, decoded HTML of its page), in the set's order."""
    from data.warc import iter_records, parse_http
    from tools import assets

    records = assets.jsonl(SCORED_SET)
    wanted = {(r["file"], r["url"]) for r in records}
    html: dict[tuple[str, str], str] = {}
    for file in sorted({f for f, _ in wanted}):
        path = assets.path(file)
        if not file.endswith(".warc.gz"):
            html[(file, "")] = decode(path.read_bytes(), "")[0]
            continue
        for rec in iter_records(str(path)):
            url = rec.headers.get("warc-target-uri", "").strip("<>")
            if rec.type == "response" and not rec.error and (file, url) in wanted:
                http = parse_http(rec.block, 1 << 26)
                html[(file, url)] = decode(http.body, http.headers.get("content-type", ""))[0]
    missing = sorted(wanted - set(html))
    if missing:
        raise ValueError(f"{SCORED_SET}: no page for {missing[0][0]} {missing[0][1]} ({len(missing)} missing)")
    return [(r, html[(r["file"], r["url"])]) for r in records]
