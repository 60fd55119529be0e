"""A deterministic synthetic web corpus with known ground truth: the default corpus of the tiny experiment.

    ./bazelw run //data:synthetic -- output=corpus/ [scale=1 shards=4 seed=0 format=warc]

Clean pages in every mix category are built from real text where the vendored data (third_party/data) has it
(C4 and Paul Graham essays for general prose, GSM8K and MATH train problems for math, UDHR translations for
multilingual) and generated where it does not (Python tutorial pages, arithmetic word problems); each is wrapped
in a web page with navigation, sidebar and footer boilerplate. Planted among them, each with the step expected
to catch it: exact and near duplicates (MinHash), older crawls of the same URL (URL dedup), boilerplate lines
repeated in many pages (line dedup), log and keyword spam and gibberish (heuristics, language ID), PII (masked, or
dropped when dense), dirty-word pages, blocked domains, binary payloads, empty pages, plus passkey-retrieval
documents for long-context training. Written as gzipped WARC shards (or JSONL), with:

    truth.jsonl      one record per document: kind, category, language, expected fate, planted strings
    labelled/*.jsonl classifier training sets (quality, code, math, topic) from text held out of the corpus
    blocklist.txt    the blocked domains
    paths.yaml       a pipeline config fragment pointing at all of the above (pass it as a second config=)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import MISSING

from data import synthetic_text as st
from data.textnorm import hash_str, ngram_hashes, normalize, word_units
from tools import assets, atomic
from tools.paths import user_path

BLOCKED_DOMAINS = ["casino-jackpot-bonus.example", "free-pills-online.example", "hot-singles-nearby.example"]
BOILERPLATE = [
    "Subscribe to our newsletter and get the best stories every week.",
    "Share this post on Facebook, Twitter and LinkedIn.",
    "Disclosure: some links on this page are affiliate links.",
    "Did you enjoy this article? Leave a comment below!",
]
DEDUP_STEPS = ["minhash"]
JUNK_STEPS = ["extract", "langid", "minhash", "gopher_repetition", "gopher_quality", "c4", "kl", "quality"]


@dataclass
class SyntheticConfig:
    output: str = MISSING
    seed: int = 0
    shards: int = 4
    scale: float = 1.0  # multiplies the number of documents of every kind
    format: str = "warc"  # warc (HTML pages in gzipped WARC) | jsonl (the pages' text)
    passkey_words: int = 2500


@dataclass
class Doc:
    id: str
    url: str
    date: str
    kind: str
    category: str
    lang: str
    expect: str  # kept | dropped | one_of_group (exactly one member of `group` is kept)
    steps: list[str] = field(default_factory=list)  # steps allowed to drop it
    group: str = ""
    planted: dict = field(default_factory=dict)  # strings that must (not) survive: pii, boilerplate, passkey
    title: str = ""
    blocks: list = field(default_factory=list)
    content_type: str = "text/html; charset=utf-8"
    charset: str = "utf-8"
    raw: bytes | None = None  # a non-HTML payload

    def text(self) -> str:
        return "\n".join([self.title] + [b for _, b in self.blocks])


class Builder:
    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.docs: list[Doc] = []
        self.urls: set[str] = set()

    def n(self, base: int) -> int:
        return max(1, round(base * self.cfg.scale))

    def new_id(self, *key) -> str:
        digest = hashlib.sha256(json.dumps([self.cfg.seed, *key]).encode()).digest()
        return f"urn:uuid:{uuid.UUID(bytes=digest[:16])}"

    def url(self, host: str | None = None) -> str:
        while True:
            u = f"https://{host or st.site(self.rng)}/{self.rng.choice(st.NOUNS)}/{self.rng.randint(1, 10**6)}"
            if u not in self.urls:
                self.urls.add(u)
                return u

    def date(self, year: int = 2024) -> str:
        return (
            f"{year}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}T{self.rng.randint(0, 23):02d}:00:00Z"
        )

    def add(self, kind: str, category: str, title: str, blocks, lang="en", expect="kept", steps=(), **kw) -> Doc:
        d = Doc(
            self.new_id(kind, len(self.docs)),
            kw.pop("url", None) or self.url(kw.pop("host", None)),
            kw.pop("date", None) or self.date(),
            kind,
            category,
            lang,
            expect,
            list(steps),
            title=title,
            blocks=list(blocks),
            **kw,
        )
        self.docs.append(d)
        return d


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_sources(rng: random.Random) -> dict:
    c4 = assets.jsonl("web/c4_sample.jsonl")
    rng.shuffle(c4)
    essays = sorted(assets.path("niah/paul_graham_essays").glob("*.txt"))
    gsm = assets.jsonl("gsm8k/train.jsonl.gz")
    rng.shuffle(gsm)
    math = [r for r in assets.jsonl("math/math_train.jsonl.gz") if len(r["solution"]) < 1500]
    rng.shuffle(math)
    udhr = {}
    udhr_dir = assets.path("multilingual/udhr")
    index = (udhr_dir / "index.tsv").read_text(encoding="utf-8").splitlines()[1:]
    for row in index:
        fname, _, _, bcp47, *_ = row.split("\t")
        body = (udhr_dir / fname).read_text(encoding="utf-8").split("\n---\n", 1)[-1]
        udhr[bcp47] = [p.strip() for p in body.splitlines() if p.strip()]
    return {"c4": c4, "essays": essays, "gsm": gsm, "math": math, "udhr": udhr}


C4_HELD = 250  # the last C4 records (after the shuffle) hold the labelled sets' general text, never the corpus's


def c4_records(records: list[dict], n_clean: int, n_spare: int, seed: int) -> tuple[list[dict], list[dict]]:
    """`n_clean` records for clean pages, then at least `n_spare` others. The sample's own records while they last
    (scale up to about 1.6); beyond them, new records made of paragraphs of many records (mixed_records)."""
    if n_clean + n_spare <= len(records):
        return records[:n_clean], records[n_clean:]
    mixed = mixed_records(records, n_clean + n_spare - len(records), random.Random(seed + 3))
    return (records + mixed)[:n_clean], (records + mixed)[n_clean:]


def mixed_records(records: list[dict], n: int, rng: random.Random, max_share: float = 0.15) -> list[dict]:
    """`n` new C4-like records for a corpus larger than the sample: paragraphs (15-150 words) dealt from a shuffled
    deck of all the sample's paragraphs (reshuffled when it runs out), each from a different sample record, until
    the record has 300 words and no paragraph holds more than `max_share` of them. So a new record shares at most
    one paragraph with an original (word 5-gram Jaccard <= max_share), and rarely two with another new one
    (<= 2 * max_share): MinHash (14 x 8) takes such a pair for a duplicate with probability 14 * J^8, under 1e-3.
    They are clean, distinct pages, as at scale 1. Their own random stream: the corpus up to the sample's size
    is unchanged."""
    paras = [
        (i, ln.strip()) for i, r in enumerate(records) for ln in r["text"].split("\n") if 15 <= len(ln.split()) <= 150
    ]
    deck: list[tuple[int, str]] = []
    out = []
    for _ in range(n):
        chosen: list[str] = []
        sources: set[int] = set()
        aside: list[tuple[int, str]] = []  # paragraphs of records already used here: back to the deck after
        words = longest = 0
        while words < 300 or longest > max_share * words:
            if not deck:
                deck = list(paras)
                rng.shuffle(deck)
            src, p = deck.pop()
            if src in sources:
                aside.append((src, p))
                continue
            sources.add(src)
            chosen.append(p)
            words += len(p.split())
            longest = max(longest, len(p.split()))
        deck += aside
        out.append({"text": "\n".join([" ".join(chosen[0].split()[:6])] + chosen)})
    return out


def c4_blocks(rec: dict) -> tuple[str, list[tuple[str, str]]]:
    lines = [ln.strip() for ln in rec["text"].split("\n") if ln.strip()]
    if len(lines) == 1:
        return " ".join(lines[0].split()[:6]), [("p", lines[0])]
    return lines[0], [("p", ln) for ln in lines[1:]]


def build(cfg: SyntheticConfig) -> tuple[list[Doc], dict[str, list[dict]]]:
    b = Builder(cfg)
    rng = b.rng
    src = load_sources(rng)
    held_c4 = src["c4"][-C4_HELD:]
    # C4 pages: clean ones, then spare ones for defects that must not be duplicates (partial overlaps, dirty words)
    c4, spare_c4 = c4_records(src["c4"][:-C4_HELD], b.n(450), b.n(8) + b.n(10), cfg.seed)
    spare = iter(c4_blocks(r) for r in spare_c4)
    clean_general = []
    for rec in c4:
        title, blocks = c4_blocks(rec)
        clean_general.append(b.add("clean", "general", title, blocks))
    # Paul Graham essays: even ones are general prose, odd ones the passkey haystacks.
    haystack: list[str] = []
    for i, path in enumerate(src["essays"]):
        paras = st.reflow(path.read_text(encoding="utf-8", errors="replace"))
        if i % 2:
            haystack += paras
            continue
        for j in range(0, len(paras), 8):
            chunk = paras[j : j + 8]
            if sum(len(p.split()) for p in chunk) >= 150:
                clean_general.append(
                    b.add("clean", "general", f"{path.stem} ({j // 8 + 1})", [("p", p) for p in chunk])
                )
    gsm, held_gsm = src["gsm"][: b.n(600)], src["gsm"][-300:]
    for i in range(0, len(gsm), 3):
        blocks = [
            ("p", f"Question: {r['question']}\nAnswer: {r['answer'].replace('####', 'The answer is')}")
            for r in gsm[i : i + 3]
        ]
        b.add("clean", "math", "Grade school math practice", blocks)
    math, held_math = src["math"][: b.n(240)], src["math"][-100:]
    for i in range(0, len(math), 2):
        blocks = [("p", f"Problem: {r['problem']}\nSolution: {r['solution']}") for r in math[i : i + 2]]
        b.add("clean", "math", f"{math[i]['type']} practice", blocks)
    for _ in range(b.n(60)):
        b.add("clean", "math", *st.arithmetic_page(rng))
    for _ in range(b.n(160)):
        b.add("clean", "code", *st.code_page(rng))
    charsets = {"de": "windows-1252", "fr": "windows-1252", "es": "windows-1252", "ru": "windows-1251"}
    multilingual = []
    for lang, paras in sorted(src["udhr"].items()):
        if lang == "en":
            continue
        for j in range(0, min(len(paras), b.n(100)), 10):
            cs = charsets.get(lang, "utf-8")
            multilingual.append(
                b.add(
                    "clean",
                    "multilingual",
                    paras[0][:60],
                    [("p", p) for p in paras[j : j + 10]],
                    lang=lang.split("-")[0],
                    charset=cs,
                    content_type=f"text/html; charset={cs}",
                )
            )
    # Passkey documents for long-context training: distinct haystack regions, the needle inside a paragraph.
    pos = 0
    for k in range(b.n(12)):
        paras, words = [], 0
        while words < cfg.passkey_words and pos < len(haystack):
            paras.append(haystack[pos])
            words += len(haystack[pos].split())
            pos += 1
        if words < cfg.passkey_words // 2:
            break
        key = str(rng.randint(10000, 99999))
        b.add(
            "passkey",
            "general",
            f"Notes {k + 1}",
            [("p", p) for p in st.passkey_paragraphs(rng, paras, key)],
            planted={"passkey": f"The pass key is {key}."},
        )

    pool = [d for d in clean_general if d.kind == "clean"]
    rng.shuffle(pool)
    take = iter(pool)
    # Exact duplicates: the same page under other URLs; exactly one of each group survives MinHash.
    for g in range(b.n(15)):
        orig = next(take)
        orig.kind, orig.expect, orig.group, orig.steps = "dup_original", "one_of_group", f"exact{g}", DEDUP_STEPS
        for _ in range(rng.randint(1, 3)):
            b.add(
                "exact_dup",
                "general",
                orig.title,
                orig.blocks,
                expect="one_of_group",
                steps=DEDUP_STEPS,
                group=f"exact{g}",
            )
    # Near duplicates: a few words edited (word 5-gram Jaccard >= 0.85 with the original, recorded).
    for g in range(b.n(15)):
        orig = next(take)
        while sum(len(t.split()) for _, t in orig.blocks) < 250:
            orig = next(take)
        orig.kind, orig.expect, orig.group, orig.steps = "near_original", "one_of_group", f"near{g}", DEDUP_STEPS
        base = orig.text()
        n_words = len(base.split())
        for _ in range(rng.randint(1, 2)):
            edits = max(1, n_words // 120)
            while True:  # edit random paragraphs until done; fewer edits if the copy drifts under 0.85
                blocks = list(orig.blocks)
                for _ in range(edits):
                    k = rng.randrange(len(blocks))
                    blocks[k] = (blocks[k][0], st.edit_words(rng, blocks[k][1], 1))
                if edits == 1 or jaccard(base, "\n".join([orig.title] + [t for _, t in blocks])) >= 0.85:
                    break
                edits -= 1
            d = b.add(
                "near_dup", "general", orig.title, blocks, expect="one_of_group", steps=DEDUP_STEPS, group=f"near{g}"
            )
            d.planted["jaccard"] = round(jaccard(base, d.text()), 3)
    # Partial overlap (negative control): half of another page; both must survive.
    for _ in range(b.n(8)):
        a = next(take)
        title, other = next(spare)
        d = b.add("partial_overlap", "general", title, a.blocks[: max(1, len(a.blocks) // 3)] + other)
        d.planted["jaccard"] = round(jaccard(a.text(), d.text()), 3)
    # Recrawls: older versions of a page at the same URL; only the newest survives URL dedup.
    for _ in range(b.n(15)):
        new = next(take)
        new.kind, new.date = "recrawl_newest", f"2024-{rng.randint(7, 12):02d}-15T00:00:00Z"
        for k in range(rng.randint(1, 2)):
            blocks = list(new.blocks) + [("p", f"Last updated in {2022 + k}: this is an older version of the page.")]
            b.add(
                "recrawl_old",
                "general",
                new.title,
                blocks,
                expect="dropped",
                steps=["url_dedup"],
                url=new.url,
                date=f"{2022 + k}-0{rng.randint(1, 9)}-10T00:00:00Z",
            )
    # Boilerplate lines inside the article of many pages: removed by line dedup, the pages stay.
    for _ in range(b.n(30)):
        d = next(take)
        d.kind, d.planted["boilerplate"] = "boilerplate", BOILERPLATE
        for line in BOILERPLATE:
            d.blocks.insert(rng.randint(1, len(d.blocks)), ("p", line))
    # PII: a few items in a normal page (masked, page kept); dense contact lists (dropped).
    for _ in range(b.n(20)):
        d = next(take)
        while len(d.text()) < 1500:
            d = next(take)
        d.kind = "pii"
        d.blocks, d.planted["pii"] = st.insert_pii(rng, d.blocks)
    for _ in range(b.n(6)):
        b.add("pii_dense", "general", *st.pii_directory(rng), expect="dropped", steps=["pii", "langid"])
    dirty = [
        w
        for w in assets.path("wordlists/ldnoobw/en").read_text().splitlines()
        if w.strip() and " " not in w.strip()
    ]
    for _ in range(b.n(10)):
        title, blocks = next(spare)
        b.add(
            "dirty",
            "general",
            title,
            st.insert_dirty(rng, blocks, dirty, 0.06),
            expect="dropped",
            steps=["dirty_words"],
        )
    for i in range(b.n(8)):
        base = next(take)
        b.add(
            "blocked_domain",
            "general",
            base.title,
            base.blocks,
            expect="dropped",
            steps=["domains"],
            host=BLOCKED_DOMAINS[i % len(BLOCKED_DOMAINS)],
        )
    for maker, kind, n in (
        (st.log_spam, "log_spam", 12),
        (st.keyword_spam, "keyword_spam", 12),
        (st.gibberish, "gibberish", 8),
        (st.short_page, "empty_page", 10),
    ):
        for _ in range(b.n(n)):
            b.add(kind, "general", *maker(rng), expect="dropped", steps=JUNK_STEPS)
    for _ in range(b.n(5)):
        png = b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(600))
        b.add("binary", "general", "", [], expect="dropped", steps=["extract"], raw=png, content_type="image/png")
        b.add("binary", "general", "", [], expect="dropped", steps=["extract"], raw=png, content_type="text/html")
    cjk_near_duplicates(b, multilingual)
    labelled = labelled_sets(cfg, held_c4, held_gsm, held_math)
    rng.shuffle(b.docs)
    return b.docs, labelled


def cjk_near_duplicates(b: Builder, multilingual: list[Doc]) -> None:
    """Near duplicates of Chinese, Japanese, Korean and Thai pages (character 5-gram Jaccard >= 0.85 with the
    original, recorded): MinHash must shingle unspaced scripts by character, since whitespace 5-grams of a
    Chinese page are whole sentences and a few edited characters hide the copy. Drawn from their own random
    stream, so the rest of the corpus does not change with them."""
    rng = random.Random(b.cfg.seed + 2)
    for lang in ("zh", "ja", "ko", "th"):
        pages = [d for d in multilingual if d.lang == lang and d.kind == "clean"]
        for g, orig in enumerate(rng.sample(pages, min(len(pages), b.n(2)))):
            orig.kind, orig.expect, orig.steps = "near_original", "one_of_group", DEDUP_STEPS
            orig.group = f"near-{lang}{g}"
            base = orig.text()
            for _ in range(rng.randint(1, 2)):
                edits = max(1, len(base) // 150)
                while True:  # fewer edits if the copy drifts under 0.85
                    blocks = list(orig.blocks)
                    for _ in range(edits):
                        k = rng.randrange(len(blocks))
                        blocks[k] = (blocks[k][0], st.edit_chars(rng, blocks[k][1], 1))
                    text = "\n".join([orig.title] + [t for _, t in blocks])
                    if edits == 1 or jaccard(base, text, lang=lang) >= 0.85:
                        break
                    edits -= 1
                url = ""
                while not url or url in b.urls:
                    url = f"https://{st.site(rng)}/{rng.choice(st.NOUNS)}/{rng.randint(1, 10**6)}"
                b.urls.add(url)
                d = b.add(
                    "near_dup",
                    "multilingual",
                    orig.title,
                    blocks,
                    lang=lang,
                    expect="one_of_group",
                    steps=DEDUP_STEPS,
                    group=orig.group,
                    url=url,
                    date=f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z",
                )
                d.planted["jaccard"] = round(jaccard(base, d.text(), lang=lang), 3)


def jaccard(a: str, b: str, n: int = 5, lang: str = "") -> float:
    """Jaccard similarity of the word n-gram shingle sets, as MinHash shingles them (the language's word units)."""
    sa, sb = (set(ngram_hashes(word_units(normalize(t), lang), n).tolist()) for t in (a, b))
    return len(sa & sb) / max(len(sa | sb), 1)


def labelled_sets(cfg: SyntheticConfig, held_c4, held_gsm, held_math) -> dict[str, list[dict]]:
    """Classifier training data from text the corpus does not contain: reference-quality text (C4, GSM8K,
    MATH, code tutorials) as positives, generated spam as negatives; categories from their sources."""
    rng = random.Random(cfg.seed + 1)

    def text(title, blocks):
        return "\n".join([title] + [t for _, t in blocks])

    general = [text(*c4_blocks(r)) for r in held_c4]
    math = [text("Math practice", [("p", f"Question: {r['question']}\nAnswer: {r['answer']}")]) for r in held_gsm[:150]]
    math += [text("Math", [("p", f"Problem: {r['problem']}\nSolution: {r['solution']}")]) for r in held_math]
    math += [text(*st.arithmetic_page(rng)) for _ in range(40)]
    code = [text(*st.code_page(rng)) for _ in range(250)]
    spam = [text(*m(rng)) for m in (st.log_spam, st.keyword_spam, st.gibberish, st.pii_directory) for _ in range(60)]
    spam += [text(*st.short_page(rng)) + " " + " ".join(BOILERPLATE) for _ in range(40)]
    spam += [" ".join(rng.choice(BOILERPLATE) for _ in range(6)) for _ in range(40)]
    sets = {
        "topic": [
            {"text": t, "label": lab} for lab, ts in (("general", general), ("math", math), ("code", code)) for t in ts
        ],
        "quality": [{"text": t, "label": "hq"} for t in general + math + code]
        + [{"text": t, "label": "lq"} for t in spam],
        "code": [{"text": t, "label": "code"} for t in code]
        + [{"text": t, "label": "other"} for t in general + math + spam],
        "math": [{"text": t, "label": "math"} for t in math]
        + [{"text": t, "label": "other"} for t in general + code + spam],
    }
    for name, rows in sets.items():
        rng.shuffle(rows)
        per_label: dict[str, int] = {}
        kept = []
        for r in rows:  # at most 300 examples per label
            per_label[r["label"]] = per_label.get(r["label"], 0) + 1
            if per_label[r["label"]] <= 300:
                kept.append(r)
        sets[name] = kept
    return sets


def warc_record(d: Doc) -> bytes:
    if d.raw is not None:
        body = d.raw
    else:
        body = st.page(d.title, d.blocks, d.url.split("/")[2], d.lang).encode(d.charset, "xmlcharrefreplace")
    http = f"HTTP/1.1 200 OK\r\nContent-Type: {d.content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    head = (
        f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Date: {d.date}\r\nWARC-Record-ID: <{d.id}>\r\n"
        f"WARC-Target-URI: {d.url}\r\nContent-Type: application/http; msgtype=response\r\n"
        f"Content-Length: {len(http)}\r\n\r\n"
    ).encode()
    return gzip.compress(head + http + b"\r\n\r\n", mtime=0)


def truth_record(d: Doc) -> dict:
    rec = asdict(d)
    for key in ("blocks", "raw", "charset", "content_type"):
        rec.pop(key)
    return rec


def write(cfg: SyntheticConfig, out: Path) -> dict:
    docs, labelled = build(cfg)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[list[Doc]] = [[] for _ in range(cfg.shards)]
    for d in docs:
        shards[hash_str(d.id) % cfg.shards].append(d)
    data_dir = out / cfg.format
    for i, part in enumerate(shards):
        if cfg.format == "warc":
            atomic.write_bytes(data_dir / f"crawl-{i:05d}.warc.gz", b"".join(warc_record(d) for d in part))
        elif cfg.format == "jsonl":
            lines = [
                json.dumps({"id": d.id, "url": d.url, "date": d.date, "text": d.text()}, ensure_ascii=False)
                for d in part
                if d.raw is None
            ]
            atomic.write_text(data_dir / f"crawl-{i:05d}.jsonl", "\n".join(lines) + "\n")
        else:
            raise ValueError(f"format must be warc or jsonl, got '{cfg.format}'")
    truth = [truth_record(d) for d in docs if cfg.format == "warc" or d.raw is None]
    atomic.write_text(out / "truth.jsonl", "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in truth))
    for name, rows in labelled.items():
        atomic.write_text(
            out / "labelled" / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
    atomic.write_text(out / "blocklist.txt", "# synthetic blocked domains\n" + "\n".join(BLOCKED_DOMAINS) + "\n")
    paths = {"input": str(data_dir), "domains": {"blocklists": [str(out / "blocklist.txt")]}}
    for name in labelled:
        paths[name] = {"train": str(out / "labelled" / f"{name}.jsonl")}
    atomic.write_text(out / "paths.yaml", json.dumps(paths, indent=1) + "\n")  # JSON is valid YAML
    kinds: dict[str, int] = {}
    for t in truth:
        kinds[t["kind"]] = kinds.get(t["kind"], 0) + 1
    return {"documents": len(truth), "kinds": dict(sorted(kinds.items())), "shards": cfg.shards, "output": str(out)}


def load_truth(out: str | Path) -> dict[str, dict]:
    return {t["id"]: t for t in _jsonl(Path(out) / "truth.jsonl")}


def main(argv: list[str] | None = None) -> int:
    from tools.config import parse

    cfg = parse(SyntheticConfig, sys.argv[1:] if argv is None else argv)
    summary = write(cfg, user_path(cfg.output))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
