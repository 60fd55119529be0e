"""HTML -> text proper: what runs inside the extraction sandbox (data/extract.py starts it). Kept free of
heavy imports so a restarted sandbox is up in a fraction of a second."""

from __future__ import annotations

import html as htmllib
import os
import pickle
import re
import struct
import sys

_MATH_SCRIPT = re.compile(
    r"<script[^>]*type\s*=\s*[\"']math/tex(;\s*mode=display)?[\"'][^>]*>(.*?)</script>", re.S | re.I
)
_MATHML = re.compile(r"<math\b([^>]*)>(.*?)</math>", re.S | re.I)
_TEX_ANNOTATION = re.compile(
    r"<annotation[^>]*encoding\s*=\s*[\"']application/x-tex[\"'][^>]*>(.*?)</annotation>", re.S | re.I
)
_ALTTEXT = re.compile(r"alttext\s*=\s*\"([^\"]*)\"", re.I)
_SKIP = [".katex-html", ".MathJax_Preview", ".MathJax", ".MathJax_Display", ".MathJax_SVG"]


def _tex(tex: str, display: bool) -> str:
    tex = htmllib.escape(htmllib.unescape(tex).strip())
    return f"<div>$${tex}$$</div>" if display else f"<span>${tex}$</span>"


def math_to_tex(html: str) -> str:
    html = _MATH_SCRIPT.sub(lambda m: _tex(m.group(2), bool(m.group(1))), html)

    def mathml(m: re.Match) -> str:
        attrs, body = m.group(1), m.group(2)
        display = "block" in attrs.lower()
        ann = _TEX_ANNOTATION.search(body)
        if ann:
            return _tex(ann.group(1), display)
        alt = _ALTTEXT.search(attrs)
        return _tex(alt.group(1), display) if alt else m.group(0)

    return _MATHML.sub(mathml, html)


_PRE = re.compile(r"<pre>(.*?)</pre>", re.S)
_TAG = re.compile(r"<[^>]{0,200}>")
_MD_RULES = [
    (re.compile(r"^\s{0,3}#{1,6}\s+", re.M), ""),  # headings
    (re.compile(r"^\s{0,3}>\s?", re.M), ""),  # block quotes
    (re.compile(r"^\s{0,3}(?:[-*_]\s*){3,}$", re.M), ""),  # horizontal rules
    (re.compile(r"^\s{0,3}(?:```|~~~).*$", re.M), ""),  # code fences
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images
    (re.compile(r"\[([^\]]+)\]\((?:[^)\s]+)(?:\s+\"[^\"]*\")?\)"), r"\1"),  # links
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"), r"\1"),  # bold (not __x__: Python's __init__ looks the same)
    (re.compile(r"`([^`\n]+)`"), r"\1"),  # inline code marks
]


def strip_markdown(text: str) -> str:
    for pattern, repl in _MD_RULES:
        text = pattern.sub(repl, text)
    return text


def _tidy(text: str) -> str:
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def from_minimal_html(markup: str, markdown: bool) -> str:
    """resiliparse's minimal-HTML output -> text: <pre> blocks verbatim, markdown stripped elsewhere."""
    parts, pos = [], 0
    for m in _PRE.finditer(markup):
        parts.append((False, markup[pos : m.start()]))
        parts.append((True, m.group(1)))
        pos = m.end()
    parts.append((False, markup[pos:]))
    out = []
    for is_code, chunk in parts:
        chunk = _TAG.sub("", chunk.replace("<br>", "\n"))
        chunk = htmllib.unescape(chunk)
        if is_code:
            out.append("\n" + chunk.strip("\n") + "\n")
        else:
            out.append(_tidy(strip_markdown(chunk) if markdown else chunk))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(p for p in out if p.strip())).strip()


def extract_html(html: str, engine: str, main_content: bool, markdown: bool) -> str:
    html = math_to_tex(html)
    if engine == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        markup = extract_plain_text(
            html,
            preserve_formatting="minimal_html",
            main_content=main_content,
            list_bullets=False,
            alt_texts=True,
            links=False,
            skip_elements=_SKIP,
        )
        return from_minimal_html(markup, markdown)
    if engine == "trafilatura":
        import trafilatura

        text = (
            trafilatura.extract(
                html,
                include_comments=False,
                include_tables=True,
                include_images=False,
                include_formatting=False,
                deduplicate=False,
                with_metadata=False,
            )
            or ""
        )
        return _tidy(strip_markdown(text) if markdown else text)
    raise ValueError(f"extract.engine must be resiliparse or trafilatura, got '{engine}'")


def serve() -> None:
    """The sandbox's loop: length-prefixed pickles in on stdin, (status, text) out on stdout."""
    import resource

    limit = int(os.environ.get("HERD_SANDBOX_MEMORY_MB", "0"))
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit << 20, limit << 20))
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        pages, opts = pickle.loads(inp.read(struct.unpack("<Q", head)[0]))
        for html in pages:
            try:
                reply = ("ok", extract_html(html, **opts))
            except MemoryError:
                reply = ("error", "MemoryError")
            except Exception as e:  # the page is dropped with this reason
                reply = ("error", f"{type(e).__name__}: {str(e)[:200]}")
            data = pickle.dumps(reply, protocol=5)
            out.write(struct.pack("<Q", len(data)) + data)
            out.flush()
