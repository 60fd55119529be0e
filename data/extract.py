"""HTML -> text: main content without boilerplate, code blocks and math kept, markdown markers removed.

The engine (resiliparse by default, or trafilatura; see data/README.md for the measurement behind the choice)
runs in a sandbox process: each page gets `timeout_s`, and a page that hangs or crashes the parser (HTML
bombs, pathological nesting) kills only the sandbox, which is restarted; the page is dropped with the reason.
Decoding (charset from HTTP, <meta>, or detection), binary sniffing and size limits happen before.

Math: MathJax `<script type="math/tex">` and MathML (its TeX annotation or alttext) become $...$ / $$...$$;
KaTeX/MathJax rendered duplicates are skipped. Code: resiliparse's minimal-HTML output marks <pre> blocks,
which are kept verbatim while markdown markers (# headings, **bold**, [links](...), ``` fences, > quotes,
--- rules) are removed from the rest of the text.
"""

from __future__ import annotations

import os
import pickle
import re
import select
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from data.base import Step, Task, batched
from data.document import Document
from data.html2text import _tidy, extract_html


@dataclass
class ExtractConfig:
    engine: str = "resiliparse"  # resiliparse | trafilatura
    main_content: bool = True  # resiliparse's main-content heuristics (drops navigation, footers, ...)
    timeout_s: float = 5.0  # per page; a page over it is dropped and the sandbox restarted
    sandbox: bool = True  # False runs the engine in-process (no time limit; for debugging only)
    sandbox_memory_mb: int = 4096  # address-space limit of the sandbox process
    max_bytes: int = 8 << 20  # pages larger than this are dropped ("page too large")
    max_chars: int = 2_000_000  # extracted text beyond this is cut
    strip_markdown: bool = True
    batch: int = 32  # pages sent to the sandbox at a time


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
    """A child process that extracts one page at a time, killed and restarted when a page overruns."""

    def __init__(self, memory_mb: int):
        self.memory_mb = memory_mb
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), HERD_SANDBOX_MEMORY_MB=str(self.memory_mb)
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from data.html2text import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
        )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()
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
        results: list[tuple[str, str]] = []
        while len(results) < len(pages):
            if self.proc is None:
                self._start()
            data = pickle.dumps((pages[len(results) :], opts), protocol=5)
            try:
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


class Extract(Step):
    name = "extract"

    def setup(self) -> None:
        self.sandbox = Sandbox(self.cfg.sandbox_memory_mb) if self.cfg.sandbox else None
        self.opts = {
            "engine": self.cfg.engine,
            "main_content": self.cfg.main_content,
            "markdown": self.cfg.strip_markdown,
        }

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        st = task.step_stats(self.name)
        try:
            for batch in batched(docs, self.cfg.batch):
                yield from self.run_batch(batch, task, st)
        finally:
            if self.sandbox is not None:
                st.counters["sandbox restarts"] += self.sandbox.restarts
                self.sandbox.close()

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
