"""Text makers for the synthetic web corpus (data/synthetic.py): HTML page templates, procedurally generated
code pages and arithmetic word problems, and the planted defects (spam, PII, dirty words, near-duplicate
edits, passkey needles). Every function takes a `random.Random` so the corpus is a function of its seed."""

from __future__ import annotations

import html
import random
import re

NAMES = [
    "Ava",
    "Ben",
    "Chloe",
    "Diego",
    "Emma",
    "Farid",
    "Grace",
    "Hiro",
    "Isla",
    "Jonas",
    "Kira",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
    "Uma",
    "Victor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
]
ITEMS = [
    ("apples", "apple"),
    ("marbles", "marble"),
    ("books", "book"),
    ("stickers", "sticker"),
    ("pencils", "pencil"),
    ("cookies", "cookie"),
    ("stamps", "stamp"),
    ("shells", "shell"),
    ("coins", "coin"),
    ("cards", "card"),
    ("tomatoes", "tomato"),
    ("bottles", "bottle"),
    ("candles", "candle"),
    ("ribbons", "ribbon"),
]
NOUNS = [
    "record",
    "item",
    "value",
    "entry",
    "node",
    "score",
    "price",
    "word",
    "row",
    "token",
    "sample",
    "reading",
    "order",
    "event",
    "user",
    "task",
    "point",
    "block",
    "frame",
    "packet",
    "ticket",
    "batch",
    "chunk",
    "page",
]
VERBS = ["count", "total", "merge", "filter", "scale", "clean", "rank", "group", "parse", "index", "split", "check"]
ADJS = ["valid", "recent", "large", "unique", "active", "sorted", "pending", "hidden", "visible", "stale", "fresh"]
SITES = [
    "maplegrove",
    "bluefin",
    "northwind",
    "quietharbor",
    "redstone",
    "sunfield",
    "ironbridge",
    "silverlake",
    "oakridge",
    "clearwater",
    "brightpath",
    "stonegate",
    "willowcreek",
    "highmeadow",
    "eastport",
    "pinecrest",
]
TLDS = ["com", "org", "net", "io", "info", "co.uk", "de", "fr"]


def site(rng: random.Random) -> str:
    return f"{rng.choice(SITES)}-{rng.choice(NOUNS)}{rng.randint(1, 99)}.{rng.choice(TLDS)}"


def page(title: str, blocks: list[tuple[str, str]], site_name: str, lang: str = "en") -> str:
    """A web page: navigation, header, the article (the blocks), a sidebar and a footer."""
    body = []
    for kind, text in blocks:
        if kind == "h":
            body.append(f"<h2>{html.escape(text)}</h2>")
        elif kind == "pre":
            body.append(f"<pre><code>{html.escape(text)}</code></pre>")
        elif kind == "math":
            body.append(f'<p><script type="math/tex; mode=display">{html.escape(text)}</script></p>')
        else:
            body.append(f"<p>{html.escape(text)}</p>")
    nav = " ".join(f'<a href="/{p}">{p.title()}</a>' for p in ("home", "blog", "archive", "about", "contact"))
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'</head>\n<body><nav class="menu">{nav}</nav>\n<header><div class="logo">{site_name}</div></header>\n'
        f"<main><article><h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</article></main>\n"
        f'<aside class="sidebar"><h3>Popular</h3><ul><li><a href="/p/1">Top ten tips</a></li>'
        f'<li><a href="/p/2">Our story</a></li></ul></aside>\n'
        f'<footer>&copy; 2024 {site_name}. All rights reserved. <a href="/privacy">Privacy</a></footer>'
        "</body></html>\n"
    )


# ---------------------------------------------------------------- code


def _ident(rng: random.Random) -> str:
    return f"{rng.choice(ADJS)}_{rng.choice(NOUNS)}s"


def _function(rng: random.Random) -> tuple[str, str]:
    """(python source, one-line description) of a small random function."""
    noun, verb, adj = rng.choice(NOUNS), rng.choice(VERBS), rng.choice(ADJS)
    name, arg = f"{verb}_{adj}_{noun}s", _ident(rng)
    k, m = rng.randint(2, 9), rng.randint(10, 99)
    kind = rng.randrange(10)
    if kind == 0:
        body = [
            "total = 0",
            f"for {noun} in {arg}:",
            f"    if {noun} % {k} == 0:",
            f"        total += {noun}",
            "return total",
        ]
        desc = f"adds up the {noun}s divisible by {k}"
    elif kind == 1:
        body = [
            "seen = set()",
            "result = []",
            f"for {noun} in {arg}:",
            f"    key = {noun}.lower().strip()",
            "    if key not in seen:",
            "        seen.add(key)",
            f"        result.append({noun})",
            "return result",
        ]
        desc = f"removes repeated {noun}s, keeping the first of each"
    elif kind == 2:
        body = [
            f"lo, hi = 0, len({arg}) - 1",
            "while lo <= hi:",
            "    mid = (lo + hi) // 2",
            f"    if {arg}[mid] == target:",
            "        return mid",
            f"    if {arg}[mid] < target:",
            "        lo = mid + 1",
            "    else:",
            "        hi = mid - 1",
            "return -1",
        ]
        desc = f"finds a target in sorted {noun}s by binary search"
        arg += ", target"
    elif kind == 3:
        body = [
            "counts = {}",
            f"for {noun} in {arg}:",
            f"    counts[{noun}] = counts.get({noun}, 0) + 1",
            f"return sorted(counts.items(), key=lambda kv: -kv[1])[:{k}]",
        ]
        desc = f"returns the {k} most frequent {noun}s"
    elif kind == 4:
        body = [
            f"if len({arg}) < {k}:",
            "    return []",
            f"window = sum({arg}[:{k}])",
            f"averages = [window / {k}]",
            f"for i in range({k}, len({arg})):",
            f"    window += {arg}[i] - {arg}[i - {k}]",
            f"    averages.append(window / {k})",
            "return averages",
        ]
        desc = f"computes a moving average of the {noun}s over {k} steps"
    elif kind == 5:
        body = [f"a, b = {arg}", "while b:", "    a, b = b, a % b", "return abs(a)"]
        desc = f"computes the greatest common divisor of two {noun}s"
    elif kind == 6:
        body = [
            "rows = []",
            f"for line in {arg}.splitlines():",
            "    if not line.strip():",
            "        continue",
            "    fields = [f.strip() for f in line.split(',')]",
            f"    if len(fields) >= {k}:",
            "        rows.append(fields)",
            "return rows",
        ]
        desc = f"parses comma-separated {noun}s with at least {k} fields"
    elif kind == 7:
        body = [
            "flat = []",
            f"stack = list(reversed({arg}))",
            "while stack:",
            "    item = stack.pop()",
            "    if isinstance(item, list):",
            "        stack.extend(reversed(item))",
            "    else:",
            "        flat.append(item)",
            "return flat",
        ]
        desc = f"flattens nested lists of {noun}s"
    elif kind == 8:
        body = [
            f"if {arg} < 2:",
            "    return False",
            "i = 2",
            f"while i * i <= {arg}:",
            f"    if {arg} % i == 0:",
            "        return False",
            "    i += 1",
            "return True",
        ]
        desc = f"tells whether a {noun} number is prime"
    else:
        body = [
            "scaled = []",
            f"peak = max({arg}) if {arg} else 1",
            f"for {noun} in {arg}:",
            f"    scaled.append(round({m} * {noun} / peak, {k % 4}))",
            "return scaled",
        ]
        desc = f"scales the {noun}s so the largest becomes {m}"
    src = f'def {name}({arg}):\n    """{desc[0].upper() + desc[1:]}."""\n' + "\n".join("    " + b for b in body)
    return src, f"`{name}` {desc}"


def code_page(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    funcs = [_function(rng) for _ in range(rng.randint(2, 4))]
    topic = rng.choice(NOUNS)
    blocks = [
        (
            "p",
            f"This short tutorial shows how to process {topic} data in Python with small, readable functions. "
            f"Each function does one job, so you can test it on its own and combine it with the others.",
        )
    ]
    for src, desc in funcs:
        blocks.append(("p", f"The function {desc}. It runs in a single pass and uses only the standard library."))
        blocks.append(("pre", src))
    name = funcs[0][0].split("(")[0].removeprefix("def ")
    blocks.append(("p", "Here is how to call it from a script and print the result:"))
    data = ", ".join(str(rng.randint(1, 99)) for _ in range(rng.randint(4, 8)))
    blocks.append(("pre", f'if __name__ == "__main__":\n    data = [{data}]\n    print({name}(data))'))
    return f"Processing {topic} data in Python", blocks


# ---------------------------------------------------------------- math


def word_problem(rng: random.Random) -> tuple[str, str]:
    a_name, b_name = rng.sample(NAMES, 2)
    plural, _ = rng.choice(ITEMS)
    x, y, z = rng.randint(3, 60), rng.randint(2, 40), rng.randint(2, 9)
    kind = rng.randrange(4)
    if kind == 0:
        q = f"{a_name} has {x} {plural}. {b_name} gives {a_name} {y} more {plural}. "
        q += f"How many {plural} does {a_name} have now?"
        s = f"{a_name} starts with {x} {plural} and gets {y} more, so {x} + {y} = {x + y}. The answer is {x + y}."
    elif kind == 1:
        x += y
        q = f"{a_name} had {x} {plural} and gave {y} of them to {b_name}. How many {plural} are left?"
        s = f"Giving away {y} of {x} leaves {x} - {y} = {x - y}. The answer is {x - y}."
    elif kind == 2:
        q = f"Each box holds {z} {plural}. {a_name} fills {y} boxes. How many {plural} are in the boxes altogether?"
        s = f"There are {y} boxes with {z} {plural} each, so {y} * {z} = {y * z}. The answer is {y * z}."
    else:
        q = (
            f"{a_name} shares {z * y} {plural} equally among {z} friends, then each friend buys {x} more. "
            f"How many {plural} does each friend have?"
        )
        s = f"Each friend first gets {z * y} / {z} = {y}, then {y} + {x} = {y + x}. The answer is {y + x}."
    return q, s


def arithmetic_page(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    blocks = [("p", "Practice these word problems, then check your reasoning against the worked solutions.")]
    for i in range(rng.randint(6, 9)):
        q, s = word_problem(rng)
        blocks.append(("p", f"Problem {i + 1}. {q}"))
        blocks.append(("p", f"Solution. {s}"))
    return "Arithmetic word problems with solutions", blocks


# ---------------------------------------------------------------- defects


def log_spam(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    svc = rng.choice(NOUNS)
    lines = []
    for _ in range(rng.randint(60, 120)):
        level = rng.choice(["ERROR", "ERROR", "WARN", "ERROR"])
        lines.append(
            f"2024-03-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d} {level} [{svc}-worker-{rng.randint(1, 8)}] "
            f"java.lang.NullPointerException at com.{svc}.service.Handler.process(Handler.java:{rng.randint(40, 49)})"
        )
    return f"{svc} service log", [("p", line) for line in lines]


def keyword_spam(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    city = rng.choice(["paris", "london", "rome", "berlin", "madrid", "lisbon"])
    thing = rng.choice(["hotels", "flights", "car rental", "cheap tickets", "apartments"])
    words = [
        f"best {thing} {city}",
        f"cheap {thing} {city}",
        f"{thing} {city} deals",
        f"book {thing} {city} now",
        f"{city} {thing} discount",
        f"top {thing} in {city}",
    ]
    paras = [" ".join(rng.choice(words) for _ in range(rng.randint(15, 25))) for _ in range(rng.randint(4, 8))]
    return f"{thing} {city}", [("p", p) for p in paras]


def gibberish(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    letters = "bcdfghjklmnpqrstvwxzaeiouy"
    paras = [
        " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(rng.randint(40, 90)))
        for _ in range(rng.randint(2, 5))
    ]
    return "untitled", [("p", p) for p in paras]


def short_page(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    return rng.choice(["Page not found", "Redirecting", "Login", "Coming soon"]), [
        ("p", rng.choice(["Click here to continue.", "Sorry, this page moved.", "Log in to view this page."]))
    ]


def _email(rng: random.Random) -> str:
    user = f"{rng.choice(NAMES).lower()}.{rng.choice(NOUNS)}{rng.randint(1, 999)}"
    return f"{user}@{rng.choice(SITES)}.{rng.choice(['com', 'org', 'net'])}"


def _phone(rng: random.Random) -> str:
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(1000, 9999)
    return rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"+44 20 {b}0 {c}"])


def _ip(rng: random.Random) -> str:
    return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def insert_pii(rng: random.Random, blocks: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Add one e-mail, phone number and IP address to a page, at the end of one of its paragraphs (masked, a
    sentence of its own would be the same in every page, and line dedup would take it)."""
    planted = {"email": _email(rng), "phone": _phone(rng), "ip": _ip(rng)}
    sentence = (
        f"For questions write to {planted['email']} or call {planted['phone']}; "
        f"the server logged your address as {planted['ip']}."
    )
    out = list(blocks)
    paras = [i for i, (kind, _) in enumerate(out) if kind == "p"]
    i = rng.choice(paras)
    out[i] = ("p", out[i][1] + " " + sentence)
    return out, planted


def pii_directory(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    rows = [
        f"{rng.choice(NAMES)} {rng.choice(NAMES)}son: {_email(rng)}, {_phone(rng)}" for _ in range(rng.randint(25, 40))
    ]
    return "Staff contact directory", [("p", r) for r in rows]


def insert_dirty(
    rng: random.Random, blocks: list[tuple[str, str]], words: list[str], rate: float
) -> list[tuple[str, str]]:
    """Insert dirty words at `rate` of the page's words (at least 5), at random places in its paragraphs."""
    out = [(kind, text.split()) for kind, text in blocks]
    paras = [i for i, (kind, _) in enumerate(out) if kind == "p"]
    total = sum(len(out[i][1]) for i in paras)
    for _ in range(max(5, int(total * rate))):
        toks = out[rng.choice(paras)][1]
        toks.insert(rng.randint(0, len(toks)), rng.choice(words))
    return [(kind, " ".join(toks)) for kind, toks in out]


def edit_words(rng: random.Random, text: str, edits: int) -> str:
    """Near-duplicate: `edits` random word substitutions, insertions or deletions."""
    toks = text.split(" ")
    for _ in range(edits):
        i = rng.randrange(len(toks))
        op = rng.randrange(3)
        if op == 0:
            toks[i] = rng.choice(NOUNS + ADJS)
        elif op == 1:
            toks.insert(i, rng.choice(NOUNS + ADJS))
        elif len(toks) > 10:
            del toks[i]
    return " ".join(toks)


def edit_chars(rng: random.Random, text: str, edits: int) -> str:
    """Near-duplicate of text written without spaces: `edits` random character substitutions, insertions or
    deletions, with characters drawn from the text itself (so its language stays what it was)."""
    chars = list(text)
    pool = [c for c in text if not c.isspace()]
    for _ in range(edits):
        i = rng.randrange(len(chars))
        op = rng.randrange(3)
        if op == 0:
            chars[i] = rng.choice(pool)
        elif op == 1:
            chars.insert(i, rng.choice(pool))
        elif len(chars) > 10:
            del chars[i]
    return "".join(chars)


def reflow(text: str, sentences_per_paragraph: int = 5) -> list[str]:
    """Split running prose into paragraphs of a few sentences (the essay files lost their blank lines)."""
    text = re.sub(r"(?<=[a-z.?!\"])(?=[A-Z][a-z])", " ", " ".join(text.split()))
    sents = re.split(r"(?<=[.?!])\s+(?=[A-Z\"])", text)
    return [" ".join(sents[i : i + sentences_per_paragraph]) for i in range(0, len(sents), sentences_per_paragraph)]


def passkey_paragraphs(rng: random.Random, paragraphs: list[str], key: str) -> list[str]:
    """Hide the needle inside a random paragraph (not on a line of its own, so line dedup leaves it) and end
    the last paragraph with the question and its answer."""
    out = list(paragraphs)
    i = rng.randrange(len(out))
    sents = re.split(r"(?<=[.?!])\s+", out[i])
    j = rng.randint(0, len(sents))
    sents.insert(j, f"The pass key is {key}. Remember it. {key} is the pass key.")
    out[i] = " ".join(sents)
    out[-1] = out[-1] + f" What is the pass key? The pass key is {key}."
    return out
