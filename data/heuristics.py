"""Heuristic filters: Gopher repetition and quality rules (Rae et al. 2021, thresholds as in FineWeb /
datatrove), C4's line rules (Raffel et al. 2020), and C4-style dirty-word counting from per-language word lists.

Words are the language's word units (data/textnorm.py `split_units`): whitespace words, or characters in
Chinese, Japanese, Thai and the other scripts written without spaces, where a whitespace "word" is a whole
sentence and its n-gram statistics would drop clean pages. Repetition statistics are computed on numpy arrays
of word hashes rather than Python n-gram tuples: one pass per n instead of one dictionary operation per n-gram.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.base import Filter
from data.document import Document
from data.textnorm import CHAR_UNIT_LANGS, split_units, units_per_word, word_units


@dataclass
class GopherRepetitionConfig:
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    top_ngram_char_frac: list[float] = field(default_factory=lambda: [0.20, 0.18, 0.16])  # n = 2, 3, 4
    dup_ngram_char_frac: list[float] = field(default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10])  # 5..10
    languages: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items that repeat an earlier one, characters in those repeats)."""
    seen: set[str] = set()
    dup = dup_chars = 0
    for it in items:
        if it in seen:
            dup += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup, dup_chars


_EXTEND = np.uint64(0x9E3779B97F4A7C15)  # odd: the n-gram hash multiplier (ngram_stats)


def _repeat_chars(positions: np.ndarray, keys: np.ndarray, cum: np.ndarray, n: int) -> int:
    """Gopher's scan over the positions whose n-gram occurs more than once (in order, with their n-gram hashes):
    an n-gram seen before adds its characters and the scan jumps past it."""
    seen: set[int] = set()
    chars, skip_to = 0, 0
    for p, key in zip(positions.tolist(), keys.tolist()):
        if p < skip_to:
            continue
        if key in seen:
            chars += int(cum[p + n] - cum[p])
            skip_to = p + n
        else:
            seen.add(key)
    return chars


def ngram_stats(
    words: list[str], top_ns=(2, 3, 4), dup_ns=range(5, 11), joined=None, limits=None, size: int = 1
) -> tuple[dict, dict]:
    """Characters of the most frequent n-gram times its count (words joined by a space, except those written
    `joined` to the one before them), and characters in repeated n-grams, as in Gopher / datatrove: scanning
    left to right, an n-gram seen before counts its characters (words joined without spaces) and the scan
    jumps past it. Computed on hashes; for n > min(dup_ns) only positions whose (n-1)-gram repeats are
    candidates (an n-gram can only repeat where its prefix does). Only equality is asked of the hashes (counts
    within one text), so words are hashed by Python's own string hash (cached on each str; seeded per process,
    which changes no result) and an n-gram extends its prefix's hash as a polynomial in an odd constant
    (invertible mod 2^64: n-grams that differ in one word never share a hash).

    `limits` (two dicts, top and dup: {n: fraction of `size`}; for a filter that only asks which statistics
    exceed their limit): a statistic whose upper bound is within its limit is not computed and is None.
    Bounds: the most frequent n-gram occurs at most as often as the most frequent shorter one, and is at most
    the longest n-gram long; repeated n-grams (n >= min(dup_ns)) lie inside the words covered by repeated
    min(dup_ns)-grams."""
    n_words = len(words)
    top = {n: 0 for n in top_ns}
    dup = {n: 0 for n in dup_ns}
    if n_words == 0:
        return top, dup
    h = np.fromiter(map(hash, words), np.int64, n_words).view(np.uint64)
    cum = np.concatenate(([0], np.cumsum(np.fromiter(map(len, words), np.int64, n_words))))
    spaced = np.arange(n_words + 1) if joined is None else np.concatenate(([0], np.cumsum(~joined)))
    g = h  # g[i]: hash of the n-gram starting at word i, for the current n
    first_dup = min(dup_ns, default=None)
    best = None  # the count of the most frequent n-gram so far (a bound on that of longer ones)
    for n in range(2, (first_dup or max(top_ns, default=1)) + 1):
        if n_words < n:
            return top, dup
        g = g[:-1] * _EXTEND + h[n - 1 :]
        if n in top:
            chars = cum[n:] - cum[:-n] + spaced[n:] - spaced[1 : len(spaced) - n + 1]  # of the n-gram at each i
            if best is not None and limits is not None and best * int(chars.max()) / size <= limits[0][n]:
                top[n] = None
                continue
            order = np.argsort(g, kind="stable")
            gs = g[order]
            starts = np.flatnonzero(np.concatenate(([True], gs[1:] != gs[:-1])))
            runs = np.diff(np.append(starts, len(gs)))
            best = runs.max()
            i = int(order[starts[runs == best]].min())  # earliest of the most frequent (Counter.most_common order)
            top[n] = int(best) * int(chars[i])
    if first_dup is None:
        return top, dup
    pos, gp = np.arange(len(g)), g
    for n in range(first_dup, max(dup_ns) + 1):
        if n > first_dup:  # extend the candidate n-grams by one word
            keep = pos + n <= n_words
            pos, gp = pos[keep], gp[keep] * _EXTEND + h[pos[keep] + n - 1]
        if len(pos) == 0:
            break
        order = np.argsort(gp)
        gs = gp[order]
        same = gs[1:] == gs[:-1]  # sorted neighbours with equal hashes
        rep = np.empty(len(gp), bool)
        rep[order] = np.concatenate((same, [False])) | np.concatenate(([False], same))
        pos, gp = pos[rep], gp[rep]
        if len(pos) == 0:
            break
        if n == first_dup and limits is not None and _covered_chars(pos, cum, n) / size <= min(limits[1].values()):
            return top, dict.fromkeys(dup)
        dup[n] = _repeat_chars(pos, gp, cum, n)
    return top, dup


def _covered_chars(pos: np.ndarray, cum: np.ndarray, n: int) -> int:
    """Characters of the words inside at least one of the n-grams starting at `pos`."""
    depth = np.zeros(len(cum), np.int64)
    np.add.at(depth, pos, 1)
    np.add.at(depth, pos + n, -1)
    covered = np.cumsum(depth[:-1]) > 0  # per word
    return int((cum[1:] - cum[:-1])[covered].sum())


class GopherRepetition(Filter):
    name = "gopher_repetition"

    def keep(self, doc: Document):
        c, text = self.cfg, doc.text
        size = max(len(text), 1)
        paras = re.split(r"\n{2,}", text.strip())
        dup, chars = _duplicates(paras)
        if dup / len(paras) > c.dup_para_frac:
            return "duplicated paragraphs", f"{dup / len(paras):.2f}"
        if chars / size > c.dup_para_char_frac:
            return "duplicated paragraph characters", f"{chars / size:.2f}"
        lines = re.split(r"\n+", text)
        dup, chars = _duplicates(lines)
        if dup / len(lines) > c.dup_line_frac:
            return "duplicated lines", f"{dup / len(lines):.2f}"
        if chars / size > c.dup_line_char_frac:
            return "duplicated line characters", f"{chars / size:.2f}"
        words, joined = split_units(text, doc.lang)
        k = units_per_word(doc.lang)  # n-grams are of words: n words are about n * k character units
        tops, dups = ([int(n * k + 0.5) for n in ns] for ns in ((2, 3, 4), range(5, 11)))
        limits = dict(zip(tops, c.top_ngram_char_frac)), dict(zip(dups, c.dup_ngram_char_frac))
        top, dup_chars = ngram_stats(words, tops, dups, joined, limits, size)
        for n, m, limit in zip((2, 3, 4), tops, c.top_ngram_char_frac):
            if top[m] is not None and top[m] / size > limit:
                return f"top {n}-gram too frequent", f"{top[m] / size:.2f}"
        for n, m, limit in zip(range(5, 11), dups, c.dup_ngram_char_frac):
            if dup_chars[m] is not None and dup_chars[m] / size > limit:
                return f"duplicated {n}-grams", f"{dup_chars[m] / size:.2f}"
        return None


# Gopher's English stop words, and the most frequent function words (particles) of Chinese and Japanese, whose
# word units are characters; languages without a list skip the stop-word rule.
STOP_WORDS = {
    "en": frozenset(["the", "be", "to", "of", "and", "that", "have", "with"]),
    "zh": frozenset(["的", "是", "在", "了", "和", "有", "不", "也"]),
    "ja": frozenset(["の", "に", "は", "を", "た", "が", "で", "と"]),
}


@dataclass
class GopherQualityConfig:
    min_words: int = 50
    max_words: int = 100_000
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # "#" per word, and ellipses per word
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8  # words holding at least one letter
    min_stop_words: int = 2
    languages: list[str] = field(default_factory=lambda: ["en"])  # its thresholds were set on English
    categories: list[str] = field(default_factory=list)


_ALPHA = re.compile(r"[^\W\d_]")  # a letter
# A whole whitespace word without a letter: a run of non-space characters that are not letters (non-word
# characters, digits, "_") with whitespace or the text's ends on both sides.
_NO_LETTER_WORD = re.compile(r"(?<!\S)(?:[^\w\s]|[\d_])+(?!\S)")
# Where the mean word length rule (set on English letters) says nothing: character units, and Hangul, whose
# letters are whole syllables.
NO_WORD_LENGTH = CHAR_UNIT_LANGS | {"ko"}
BULLETS = ("•", "●", "○", "▪", "‣", "⁃", "◦", "-", "*")


def letter_word_fraction(text: str, words: list[str], joined) -> float:
    """The fraction of `words` (split_units of `text`) holding at least one letter. Whitespace words (`joined`
    None) are counted in one regex pass over the text: those without a letter."""
    if joined is None:
        return 1 - len(_NO_LETTER_WORD.findall(text)) / len(words)
    return sum(1 for w in words if _ALPHA.search(w)) / len(words)


class GopherQuality(Filter):
    name = "gopher_quality"

    def keep(self, doc: Document):
        c, text = self.cfg, doc.text
        words, joined = split_units(text, doc.lang)
        n = len(words)
        if n < c.min_words:
            return "too few words", str(n)
        if n > c.max_words:
            return "too many words", str(n)
        if doc.lang not in NO_WORD_LENGTH:
            avg = sum(map(len, words)) / n
            if avg < c.min_avg_word_length:
                return "words too short on average", f"{avg:.2f}"
            if avg > c.max_avg_word_length:
                return "words too long on average", f"{avg:.2f}"
        for symbol, count in (("#", text.count("#")), ("ellipsis", text.count("...") + text.count("…"))):
            if count / n > c.max_symbol_word_ratio:
                return f"too many {symbol} symbols", f"{count / n:.2f}"
        lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
        if lines:
            bullets = sum(ln.startswith(BULLETS) for ln in lines) / len(lines)
            if bullets > c.max_bullet_lines_ratio:
                return "too many bullet lines", f"{bullets:.2f}"
            ellipsis = sum(ln.endswith(("...", "…")) for ln in lines) / len(lines)
            if ellipsis > c.max_ellipsis_lines_ratio:
                return "too many lines ending in an ellipsis", f"{ellipsis:.2f}"
        alpha = letter_word_fraction(text, words, joined)
        if alpha < c.min_alpha_words_ratio:
            return "too few words with letters", f"{alpha:.2f}"
        stop_words = STOP_WORDS.get(doc.lang or "en")
        if stop_words is not None:
            if doc.lang in CHAR_UNIT_LANGS:  # single characters: distinct ones found anywhere in the text
                stops = sum(w in text for w in stop_words)
            else:  # distinct ones ("two of the following")
                stops = len(stop_words.intersection(map(str.lower, words)))
            if stops < c.min_stop_words:
                return "too few stop words", str(stops)
        return None


@dataclass
class C4Config:
    min_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    terminal_punctuation: bool = True  # keep only lines ending in . ! ? or a quote
    remove_citations: bool = True  # [1], [citation needed]
    policy_lines: bool = True  # drop lines about cookies / terms of use / privacy policy
    javascript_lines: bool = True
    lorem_ipsum: bool = True  # drop documents with "lorem ipsum"
    curly_bracket: bool = True  # drop documents with "{" (C4's code / template filter)
    languages: list[str] = field(default_factory=lambda: ["en"])
    categories: list[str] = field(default_factory=lambda: ["general", ""])  # never on code or math


_CITATION = re.compile(r"\[\d+\]|\[citation needed\]|\[edit\]", re.I)
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*(?=\s|$)")
_TERMINAL = (".", "!", "?", '"', "”", "'", "’")


class C4Filter(Filter):
    """C4's rules: edits the text (drops lines) and drops documents that end up too short."""

    name = "c4"

    def keep(self, doc: Document):
        c, text = self.cfg, doc.text
        low = text.lower()
        if c.lorem_ipsum and "lorem ipsum" in low:
            return "lorem ipsum"
        if c.curly_bracket and "{" in text:
            return "curly bracket"
        kept = []
        for line in text.split("\n"):
            line = line.strip()
            if c.remove_citations and "[" in line:
                line = _CITATION.sub("", line)
            words = line.split()
            if len(words) < c.min_words_per_line:
                continue
            if len(line) > c.max_word_length and any(len(w) > c.max_word_length for w in words):
                continue
            if c.terminal_punctuation and not line.endswith(_TERMINAL):
                continue
            ll = line.lower()
            if c.javascript_lines and "javascript" in ll:
                continue
            if c.policy_lines and any(p in ll for p in _POLICY):
                continue
            kept.append(line)
        out = "\n".join(kept)
        sentences = len(_SENTENCE_END.findall(out))
        if sentences < c.min_sentences:
            return "too few sentences after C4 line rules", str(sentences)
        doc.text = out
        return None


@dataclass
class DirtyWordsConfig:
    wordlist_dir: str = "assets:wordlists/ldnoobw"  # one file per language code (LDNOOBW layout)
    max_fraction: float = 0.02  # drop when dirty-word hits / words exceeds this ...
    min_hits: int = 3  # ... and there are at least this many hits
    fallback: str = ""  # list for languages without a file ("" = do not check them)
    # C4 used the English list only; several other LDNOOBW lists hold everyday words (Persian "person",
    # Chinese "nature", Japanese "race"), so curate a list before adding its language here.
    languages: list[str] = field(default_factory=lambda: ["en"])
    categories: list[str] = field(default_factory=list)


_WORD = re.compile(r"\w+")
NO_SPACES = ("zh", "ja", "th", "ko")  # word lists matched as substrings


class WordList:
    """One language's list: single words matched against word tokens, phrases and unspaced scripts by regex."""

    def __init__(self, entries: list[str], lang: str):
        self.lang = lang
        entries = sorted({e.strip().lower() for e in entries if e.strip() and not e.startswith("#")})
        self.words = frozenset(e for e in entries if " " not in e and lang not in NO_SPACES)
        phrases = [e for e in entries if e not in self.words]
        phrases.sort(key=len, reverse=True)
        body = "|".join(re.escape(p) for p in phrases)
        if not phrases:
            self.phrases = None
        elif lang in NO_SPACES:
            self.phrases = re.compile(body)
        else:
            self.phrases = re.compile(rf"(?<!\w)(?:{body})(?!\w)")

    def hits(self, text: str) -> tuple[int, int]:
        low = text.lower()
        tokens = _WORD.findall(low)
        n = sum(1 for t in tokens if t in self.words)
        if self.phrases is not None:
            n += len(self.phrases.findall(low))
        if self.lang in CHAR_UNIT_LANGS:  # a \w+ token is a whole phrase there: count word units
            return n, len(word_units(low, self.lang))
        return n, len(tokens)


class DirtyWords(Filter):
    name = "dirty_words"

    def prepare_run(self) -> None:
        self.setup()

    def setup(self) -> None:
        self.dir = self.env.path(self.cfg.wordlist_dir)
        if not self.dir.is_dir():
            raise FileNotFoundError(f"dirty_words.wordlist_dir {self.dir} is not a folder of per-language lists")
        self.lists: dict[str, WordList | None] = {}

    def wordlist(self, lang: str) -> WordList | None:
        if lang not in self.lists:
            path = Path(self.dir) / lang
            if not path.is_file() and self.cfg.fallback:
                path = Path(self.dir) / self.cfg.fallback
            self.lists[lang] = WordList(path.read_text(encoding="utf-8").splitlines(), lang) if path.is_file() else None
        return self.lists[lang]

    def keep(self, doc: Document):
        wl = self.wordlist(doc.lang or self.cfg.fallback)
        if wl is None:
            return None
        hits, n = wl.hits(doc.text)
        if hits >= self.cfg.min_hits and hits / max(n, 1) > self.cfg.max_fraction:
            return "dirty words", f"{hits} of {n} words"
        return None
