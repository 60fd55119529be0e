"""HTML -> text proper: what runs inside the extraction sandbox (data/extract.py starts it). The sandbox imports
its engine once, before it takes pages, so a page's time limit covers only that page."""

from __future__ import annotations

import html as htmllib
import importlib
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
ENGINES = {"resiliparse": "resiliparse.extract.html2text", "trafilatura": "trafilatura"}  # name: module
FAVOR = ("precision", "balanced", "recall")


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


def drop_rendered_math(html: str) -> str:
    """Removes KaTeX/MathJax rendered copies (their TeX is kept by math_to_tex), for engines that take no
    skip list. Pages without them are returned as they are, unparsed."""
    if "katex" not in html and "MathJax" not in html:
        return html
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    if tree.body is None:
        return html
    for node in tree.body.query_selector_all(", ".join(_SKIP)):
        if node.parent is not None:  # not already gone with a removed ancestor
            node.decompose()
    return tree.document.html


_PRE = re.compile(r"<pre>(.*?)</pre>", re.S)
_TAG = re.compile(r"<[^>]{0,200}>")
_LINK_TAG = re.compile(r"</?a\b[^>]*>")
_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>", re.S)
_MD_RULES = [  # (pattern, replacement, strings of which the text must hold one for the pattern to match)
    (re.compile(r"^\s{0,3}#{1,6}\s+", re.M), "", ("#",)),  # headings
    (re.compile(r"^\s{0,3}>\s?", re.M), "", (">",)),  # block quotes
    (re.compile(r"^\s{0,3}(?:[-*_]\s*){3,}$", re.M), "", ("-", "*", "_")),  # horizontal rules
    (re.compile(r"^\s{0,3}(?:```|~~~).*$", re.M), "", ("```", "~~~")),  # code fences
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1", ("](",)),  # images
    (re.compile(r"\[([^\]]+)\]\((?:[^)\s]+)(?:\s+\"[^\"]*\")?\)"), r"\1", ("](",)),  # links
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"), r"\1", ("**",)),  # bold (not __x__: Python's __init__ looks the same)
    (re.compile(r"`([^`\n]+)`"), r"\1", ("`",)),  # inline code marks
]
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def strip_markdown(text: str) -> str:
    for pattern, repl, needles in _MD_RULES:
        if any(n in text for n in needles):  # a scan for a string is much cheaper than one for a pattern
            text = pattern.sub(repl, text)
    return text


def _tidy(text: str) -> str:
    if "  " in text or "\t" in text or "\u00a0" in text:  # most texts have only lone spaces: nothing to replace
        text = _SPACES.sub(" ", text)
    lines = [line.strip() for line in text.split("\n")]  # (a run of spaces never holds a newline)
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _join(parts: list[tuple[bool, str]], clean) -> str:
    """(is code, chunk) pairs -> text: code verbatim between blank lines, `clean` applied to the rest."""
    out = [("\n" + chunk.strip("\n") + "\n") if is_code else clean(chunk) for is_code, chunk in parts]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(p for p in out if p.strip())).strip()


def _split(text: str, pattern: re.Pattern) -> list[tuple[bool, str]]:
    parts, pos = [], 0
    for m in pattern.finditer(text):
        parts += [(False, text[pos : m.start()]), (True, m.group(1))]
        pos = m.end()
    return parts + [(False, text[pos:])]


def from_minimal_html(markup: str, markdown: bool) -> str:
    """resiliparse's minimal-HTML output -> text: <pre> blocks verbatim, markdown stripped elsewhere."""
    parts = [(is_code, htmllib.unescape(_TAG.sub("", c.replace("<br>", "\n")))) for is_code, c in _split(markup, _PRE)]
    return _join(parts, lambda c: _tidy(strip_markdown(c) if markdown else c))


def _element_text(el) -> str:
    """The text of one of trafilatura's XML elements: <lb/> is a line break, table cells are tab-separated, and
    lists or paragraphs nested inside start lines of their own."""
    out = [el.text or ""]
    for child in el:
        if child.tag == "lb":
            out.append("\n")
        elif child.tag == "cell":
            out.append(_element_text(child) + "\t")
        elif child.tag in ("list", "item", "row", "p", "head", "quote", "code", "table", "div"):
            out.append("\n" + _element_text(child) + "\n")
        else:
            out.append(_element_text(child))
        out.append(child.tail or "")
    return "".join(out)


def from_trafilatura(body, markdown: bool) -> str:
    """trafilatura's extracted XML tree -> text laid out as from resiliparse: <code> blocks verbatim, paragraphs
    and headings apart by a blank line, list items and table rows (tab-separated cells) a line each; markdown
    (as the page's own text has it) stripped outside code."""
    parts: list[tuple[str, str]] = []  # (kind: code | item | row | paragraph, text)

    def block(el) -> None:
        if el.tag == "code":
            parts.append(("code", "".join(el.itertext())))
        elif el.tag in ("list", "table", "div") or (el.tag == "quote" and len(el)):
            if (el.text or "").strip():
                parts.append(("paragraph", el.text))
            for child in el:
                block(child)
        elif el.tag == "row":
            parts.append(("row", "\t".join(_element_text(cell) for cell in el)))
        else:
            parts.append(("item" if el.tag == "item" else "paragraph", _element_text(el)))
        if (el.tail or "").strip():
            parts.append(("paragraph", el.tail))

    for el in body:
        block(el)
    out, prev = [], ""
    for kind, text in parts:
        if kind == "code":
            text = text.strip("\n")
        else:
            text = _tidy(strip_markdown(text) if markdown else text)
        if text.strip():
            out.append(("\n" if kind == prev and kind in ("item", "row") else "\n\n") + text if out else text)
            prev = kind
    return "".join(out)


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _words(text: str) -> float:
    """Whitespace words, with CJK characters counted as half a word each (about two per word)."""
    n = len(text.split())
    cjk = len(_CJK.findall(text)) if not text.isascii() else 0
    return n + cjk / 2


TRIM_PENALTY = 5.0  # words a block must carry to pay for itself (measured: data/README.md)


def trim_blocks(markup: str, penalty: float = TRIM_PENALTY) -> str:
    """The run of consecutive blocks with the most main text, from resiliparse's minimal HTML with links.

    Each block (a line, or a whole <pre>) scores its words outside links, minus its words inside links, minus
    `penalty`: paragraphs score high, navigation, link lists and short UI lines (buttons, dates, bylines) below
    zero. The run with the largest sum (Kadane's maximum subarray, as in Finn et al.'s body text extraction)
    is kept, with the heading just above it (at most 3 blocks up); boilerplate before and after goes."""
    blocks: list[tuple[str, float, bool]] = []
    for is_code, chunk in _split(markup, _PRE):
        for line in [f"<pre>{chunk}</pre>"] if is_code else chunk.split("\n"):
            text = _TAG.sub("", _LINK_TAG.sub("", line))
            if not text.strip():
                continue
            links = sum(_words(_TAG.sub("", a)) for a in _LINK.findall(line))
            blocks.append((line, _words(text) - 2 * links - penalty, line.lstrip().startswith("<h")))
    best = run = 0.0
    start = first = 0
    last = -1
    for i, (_, score, _) in enumerate(blocks):
        if run <= 0:
            run, start = score, i
        else:
            run += score
        if run > best:
            best, first, last = run, start, i
    for j in range(first - 1, max(first - 4, -1), -1):
        if blocks[j][2]:
            first = j
            break
    return "\n".join(line for line, _, _ in blocks[first : last + 1])


def extract_html(
    html: str,
    engine: str = "trafilatura",
    main_content: bool = True,
    markdown: bool = True,
    favor: str = "recall",
    trim: bool = False,
) -> str:
    """One page to text. resiliparse: `main_content` heuristics, `trim` to the densest run of blocks;
    trafilatura: `favor` precision, balanced (its default) or recall. `markdown`: remove markdown markers."""
    html = math_to_tex(html)
    if engine == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        markup = extract_plain_text(
            html,
            preserve_formatting="minimal_html",
            main_content=main_content,
            list_bullets=False,
            alt_texts=True,  # in main-content mode this also keeps <figure> code listings
            links=trim,
            comments=False,
            post_meta=False,
            skip_elements=_SKIP,
        )
        if trim:
            markup = _LINK_TAG.sub("", trim_blocks(markup))
        return from_minimal_html(markup, markdown)
    if engine == "trafilatura":
        if favor not in FAVOR:
            raise ValueError(f"extract.favor must be one of {', '.join(FAVOR)}, got '{favor}'")
        import trafilatura

        doc = trafilatura.bare_extraction(
            drop_rendered_math(html),
            include_comments=False,
            include_tables=True,
            include_images=False,
            include_formatting=False,
            deduplicate=False,
            with_metadata=False,
            favor_precision=favor == "precision",
            favor_recall=favor == "recall",
        )
        return from_trafilatura(doc.body, markdown) if doc is not None and doc.body is not None else ""
    raise ValueError(f"extract.engine must be one of {', '.join(ENGINES)}, got '{engine}'")


def serve() -> None:
    """The sandbox's loop: imports the engine (HERD_SANDBOX_ENGINE) and says ("ready", ""); then length-prefixed
    pickles in on stdin, (status, text) out on stdout."""
    import resource

    limit = int(os.environ.get("HERD_SANDBOX_MEMORY_MB", "0"))
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit << 20, limit << 20))
    inp, out = sys.stdin.buffer, sys.stdout.buffer

    def send(reply: tuple[str, str]) -> None:
        data = pickle.dumps(reply, protocol=5)
        out.write(struct.pack("<Q", len(data)) + data)
        out.flush()

    engine = os.environ.get("HERD_SANDBOX_ENGINE", "")
    if engine in ENGINES:
        importlib.import_module(ENGINES[engine])
    send(("ready", ""))
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
            send(reply)
