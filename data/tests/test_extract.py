"""HTML -> text: main content, code and math kept, markdown removed; the scored set and the default; hostile input."""

import time

import pytest

from data.base import Task
from data.document import Document
from data.extract import (
    MARGIN,
    SETTINGS,
    Extract,
    ExtractConfig,
    choose_default,
    decode,
    looks_binary,
    score,
    scored_pages,
    shared_sandbox,
    summarize,
    tokens,
)
from data.html2text import extract_html, trim_blocks

PAGE = """<html><head><title>T</title><script>var x = 1;</script></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
<article><h1>Summing a list in Python</h1>
<p>Here is some <b>bold</b> text &amp; an entity, and **markdown bold** with a [link](http://x.org).</p>
<p>## Not a heading any more</p>
<pre><code># add the numbers
def total(xs):
    s = 0
    for x in xs:
        s += x  # **not** markdown inside code
    return s
</code></pre>
<p>The identity <math alttext="e^{i\\pi}+1=0"><mi>e</mi></math>
and <script type="math/tex">\\frac{a}{b}</script> hold.</p>
<p>Display: <span class="katex"><span class="katex-mathml"><math><semantics><mrow><mi>x</mi></mrow>
<annotation encoding="application/x-tex">x^2</annotation></semantics></math></span>
<span class="katex-html">x2</span></span></p>
<img src="a.png" alt="A diagram of the loop">
</article><footer>Copyright 2024 Example. All rights reserved.</footer></body></html>"""


def test_main_content_code_math_and_markdown():
    text = extract_html(PAGE, "resiliparse", True, True)
    assert text.startswith("Summing a list in Python")
    assert "def total(xs):\n    s = 0\n    for x in xs:\n        s += x  # **not** markdown inside code" in text
    assert "# add the numbers" in text  # a code comment is not a markdown heading
    assert "bold text & an entity, and markdown bold with a link." in text
    assert "Not a heading any more" in text and "##" not in text
    assert "$e^{i\\pi}+1=0$" in text and "$\\frac{a}{b}$" in text and "$x^2$" in text and "x2" not in text
    assert "A diagram of the loop" in text
    assert "Home" not in text and "Copyright" not in text and "var x" not in text


def test_trafilatura_keeps_code_and_math_and_removes_its_markdown():
    page = PAGE.replace(
        "</article>",
        "<p>A list <em>worth</em> reading, and more words so that it is a paragraph:</p><ul><li>first point</li>"
        "<li>second point</li></ul><table><tr><th>n</th><th>square</th></tr><tr><td>3</td><td>9</td></tr></table>"
        "</article>",
    )
    text = extract_html(page, "trafilatura", favor="recall")
    assert text.startswith("Summing a list in Python")
    assert "def total(xs):\n    s = 0\n    for x in xs:\n        s += x  # **not** markdown inside code" in text
    assert "# add the numbers" in text
    assert "bold text & an entity, and markdown bold with a link." in text
    assert "Not a heading any more" in text and "##" not in text
    assert "$e^{i\\pi}+1=0$" in text and "$\\frac{a}{b}$" in text and "$x^2$" in text and "x2" not in text
    assert "A list worth reading" in text and "*worth*" not in text and "\nfirst point\nsecond point" in text
    assert "second point\n\nn square\n3 9" in text  # a row a line, cells apart
    assert "Home" not in text and "Copyright" not in text and "var x" not in text
    with pytest.raises(ValueError, match="favor must be one of"):
        extract_html(PAGE, "trafilatura", favor="speed")


def test_trim_keeps_the_densest_run_of_blocks():
    nav = "\n".join(f'<a href="/{i}">Section {i}</a>' for i in range(8))
    body = "\n".join(f"<p>Paragraph {i} has enough words in it to be worth keeping as main text.</p>" for i in range(4))
    tail = '<p>Share</p>\n<p>Related: <a href="/x">x y z</a></p>'
    markup = f"{nav}\n<h1>The title</h1>\n<p>By A. Writer</p>\n{body}\n{tail}"
    kept = trim_blocks(markup).split("\n")
    assert kept[0] == "<h1>The title</h1>" and kept[-1].startswith("<p>Paragraph 3")  # title pulled in, tail cut
    assert len(kept) == 6 and not any("Section" in k or "Share" in k for k in kept)
    assert trim_blocks("") == "" and trim_blocks('<a href="/">Home</a>') == ""


# Measured on the scored set (data/README.md, bench_extract): the default, trafilatura favouring recall, has
# P 0.978 R 0.938 F1 0.957; the best resiliparse setting F1 0.930, more than MARGIN below it.
def test_scored_set_default_and_the_rule():
    pages = scored_pages()
    assert len(pages) >= 20 and len({rec["lang"] for rec, _ in pages}) >= 5
    results = {}
    for name, setting in SETTINGS.items():
        cfg = ExtractConfig(**setting)
        opts = {"engine": cfg.engine, "main_content": cfg.main_content, "favor": cfg.favor, "trim": cfg.trim}
        p, r, f1 = summarize([score(rec["text"], extract_html(html, **opts)) for rec, html in pages])
        results[name] = {"p": p, "r": r, "f1": f1}
    default = ExtractConfig()
    chosen = next(n for n, s in SETTINGS.items() if all(getattr(default, k) == v for k, v in s.items()))
    assert chosen == "trafilatura, favor recall"
    best = results[chosen]
    assert best["f1"] == max(r["f1"] for r in results.values()) and best["f1"] >= 0.95
    assert best["p"] >= 0.97 and best["r"] >= 0.93
    assert 0.90 <= results["resiliparse, main content"]["f1"] <= 0.93  # the old default
    assert results["resiliparse, all text"]["p"] < 0.8 and results["resiliparse, all text"]["r"] > 0.99
    # The rule without timing: even were every resiliparse setting infinitely fast, none comes within MARGIN of
    # trafilatura's F1, so the choice does not depend on the speeds the benchmark measures.
    for res in results.values():
        res["dps"] = 1.0
    for name in results:
        if SETTINGS[name]["engine"] == "resiliparse":
            results[name]["dps"] = float("inf")
            assert results[name]["f1"] < best["f1"] - MARGIN, name
    assert choose_default(results)[0] == chosen


def test_scoring():
    words = ["grüsse", "world", "数", "据", "清", "洗", "ok_go", "3", "14"]  # case-folded; a token per ideograph
    assert tokens("Grüße, WORLD! 数据清洗 ok_go 3.14") == words
    assert score("a b c d e", "a b c d e") == (1.0, 1.0)
    assert score("a b c d e", "x a b c d") == (0.5, 0.5)  # shingles (a b c d) of two in each
    assert score("a b c d e", "") == (None, 0.0)
    assert score("one two", "one two") == (1.0, 1.0)  # shorter than 4 words: one shingle
    assert summarize([(1.0, 0.5), (None, 0.0)]) == (1.0, 0.25, 0.4)
    with pytest.raises(ValueError, match="no words"):
        score("...", "text")


def run_extract(docs, **cfg):
    task = Task(0)
    step = Extract(ExtractConfig(**cfg), None)
    step.setup()
    out = list(step(iter(docs), task))
    return out, task.step_stats("extract")


def html_doc(i, raw: bytes, ctype="text/html") -> Document:
    return Document(id=f"d{i}", raw=raw, content_type=ctype)


def hostile_docs() -> list[Document]:
    good = PAGE.encode()
    return [
        html_doc(0, good),
        html_doc(
            1,
            b"<html><body><p>caf\xe9 cr\xe8me \xff\xfe broken utf-8 but a real sentence here.</p></body></html>",
            "text/html; charset=utf-8",
        ),
        html_doc(2, b""),
        html_doc(3, b"<p>" + b"x" * (50 << 20) + b"</p>"),  # a 50 MB page
        html_doc(4, bytes(range(256)) * 40, "text/html"),  # binary content labelled as HTML
        html_doc(5, b"\x89PNG\r\n\x1a\n....", "image/png"),
        html_doc(6, ("<div>" * 200_000 + "deep" + "</div>" * 200_000).encode()),  # a nesting bomb
        html_doc(7, b"<html><body><p>" + b"word " * 400_000 + b"</p></body></html>"),  # a 2 MB line
        html_doc(8, good),
        Document(id="d9", text="already text, passes through"),
    ]


# resiliparse hangs on the nesting bomb: the sandbox is killed, restarted, and the next page extracted.
def test_hostile_input_is_counted_not_fatal():
    start = time.time()
    out, st = run_extract(hostile_docs(), engine="resiliparse", timeout_s=1.0, max_chars=100_000)
    assert time.time() - start < 30
    kept = {d.id: d for d in out}
    assert set(kept) == {"d0", "d1", "d7", "d8", "d9"}
    assert "café crème" in kept["d1"].text  # mislabelled as UTF-8: the real charset is detected
    assert len(kept["d7"].text) == 100_000 and st.counters["texts cut at max_chars"] == 1
    assert kept["d8"].text == kept["d0"].text  # the sandbox came back after the bomb
    assert st.dropped == {
        "empty after extraction": 1,
        "page too large": 1,
        "binary content": 1,
        "not a text content type": 1,
        "extraction timeout": 1,
    }
    assert st.counters["sandbox restarts"] == 1
    assert st.docs_in == 10 and st.docs_out == 5


# trafilatura (the default) returns nothing for the bomb at once; the sandbox imports it before the first page's
# clock starts, so a short time limit is not spent on the import.
def test_hostile_input_with_the_default_engine():
    out, st = run_extract(hostile_docs(), timeout_s=1.0, max_chars=100_000)
    kept = {d.id: d for d in out}
    assert set(kept) == {"d0", "d1", "d7", "d8", "d9"} and kept["d8"].text == kept["d0"].text
    assert "café crème" in kept["d1"].text and len(kept["d7"].text) == 100_000
    assert st.dropped == {
        "empty after extraction": 2,
        "page too large": 1,
        "binary content": 1,
        "not a text content type": 1,
    }
    assert st.counters["sandbox restarts"] == 0 and st.docs_in == 10 and st.docs_out == 5
    with pytest.raises(ValueError, match="extract.engine must be one of resiliparse, trafilatura"):
        run_extract([], engine="lxml")


# A process keeps its sandbox from task to task (a start costs an interpreter and the engine's import); restarts
# are counted in the task that caused them, and a sandbox killed by a bomb serves the next task restarted.
def test_the_sandbox_outlives_the_task():
    def page():  # a fresh document each time: extraction consumes doc.raw
        return [hostile_docs()[0]]

    def pid():
        return shared_sandbox(4096, "resiliparse", 60.0).proc.pid

    _, first = run_extract(page(), engine="resiliparse", timeout_s=1.0)
    started = pid()
    out, second = run_extract(page(), engine="resiliparse", timeout_s=1.0)
    assert pid() == started and len(out) == 1
    assert first.counters["sandbox restarts"] == second.counters["sandbox restarts"] == 0
    _, bomb = run_extract([hostile_docs()[6]], engine="resiliparse", timeout_s=1.0)
    assert bomb.dropped == {"extraction timeout": 1} and bomb.counters["sandbox restarts"] == 1
    out, after = run_extract(page(), engine="resiliparse", timeout_s=1.0)
    assert [d.text for d in out] == [d.text for d in run_extract(page(), engine="resiliparse", sandbox=False)[0]]
    assert after.counters["sandbox restarts"] == 0 and pid() != started


def test_decoding_and_binary_sniffing():
    assert decode("Grüße".encode("cp1252"), "text/html; charset=windows-1252") == ("Grüße", "windows-1252")
    text, how = decode("Привет, мир".encode("cp1251"), "text/html")
    assert how != "utf-8" and isinstance(text, str)
    assert decode(b'<meta charset="iso-8859-1"><p>caf\xe9</p>', "")[0].endswith("café</p>")
    broken = "Grüße aus 日本, mostly fine UTF-8 text with one bad byte: ".encode() + b"\xff" + b" and more"
    assert decode(broken, "text/html; charset=utf-8") == (broken.decode("utf-8", "replace"), "invalid utf-8")
    assert looks_binary(b"\x00\x01PK") and not looks_binary(b"plain text\twith tabs\n")
