"""Text normalisation, word units, and fast vectorised hashing shared by the dedup, heuristic and classifier steps.

Hashing whole words or word n-grams one Python call at a time is what makes pure-Python pipelines slow.
Here a text is encoded once to UTF-8 bytes and every span's hash comes out of one numpy pass: a polynomial
hash over bytes, made position-independent with prefix sums of c_k * B^-k (B is odd, so it has an inverse
mod 2^64), then scrambled with the splitmix64 finaliser. Hashes are deterministic across processes and
machines (Python's own `hash()` of a str is not).

Word units (`split_units`): whitespace words, except in scripts written without spaces between words (Chinese,
Japanese, Thai, Lao, Khmer, Burmese, Tibetan), where a whitespace "word" is a whole phrase or sentence and
n-gram statistics and shingles over it mean nothing. There each character is a unit, with the combining marks
that belong to it (for Thai and Lao also the vowels written after it, and a vowel written before it goes with
the next letter: Thai character clusters) and the punctuation around it. datatrove uses per-language word
segmenters (jieba, SudachiPy, PyThaiNLP) here; character units need no dependency and are the usual unit of
CJK near-duplicate shingles. Korean writes spaces between words, so its units are whitespace words. The language
(from language ID) picks the rule: languages written with spaces always get whitespace words, the unspaced ones
and unknown ("") get character units wherever their characters occur.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import numpy as np
import xxhash

from tools.hashing import mix64

_B = np.uint64(0x100000001B3)  # odd multiplier of the polynomial hash
_B_INV = np.uint64(pow(int(_B), -1, 1 << 64))
_MASK = (1 << 64) - 1


class _Powers:
    """B^k and B^-k mod 2^64 for k < n, grown on demand (pure constants, safe to share)."""

    def __init__(self):
        self.pow = np.ones(1, np.uint64)
        self.inv = np.ones(1, np.uint64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pow) < n:
            size = max(n, 2 * len(self.pow), 1 << 16)
            ones = np.ones(1, np.uint64)
            self.pow = np.concatenate((ones, np.cumprod(np.full(size - 1, _B, np.uint64), dtype=np.uint64)))
            self.inv = np.concatenate((ones, np.cumprod(np.full(size - 1, _B_INV, np.uint64), dtype=np.uint64)))
        return self.pow, self.inv


_POWERS = _Powers()


def _prefix(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G[k] = sum_{j<k} (b_j + 1) B^-j, and the table of B powers."""
    pw, inv = _POWERS.get(len(b) + 1)
    g = np.empty(len(b) + 1, np.uint64)
    g[0] = 0
    np.cumsum((b.astype(np.uint64) + np.uint64(1)) * inv[: len(b)], out=g[1:])
    return g, pw


def span_hashes(b: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """64-bit hashes of the byte spans b[starts[i]:ends[i]] (equal bytes give equal hashes, wherever they are)."""
    if len(starts) == 0:
        return np.zeros(0, np.uint64)
    g, pw = _prefix(b)
    # sum_{j=s}^{e-1} c_j B^(e-1-j) = (G[e] - G[s]) * B^(e-1)
    h = (g[ends] - g[starts]) * pw[np.maximum(ends - 1, 0)]
    return mix64(h ^ (ends - starts).astype(np.uint64))


def words_bytes(words: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UTF-8 bytes of " ".join(words) with the start and end byte offset of every word."""
    joined = " ".join(words).encode("utf-8", "surrogatepass")
    b = np.frombuffer(joined, np.uint8)
    if not words:
        return b, np.zeros(0, np.int64), np.zeros(0, np.int64)
    sp = np.flatnonzero(b == 32)
    if len(sp) == len(words) - 1:
        starts = np.concatenate(([0], sp + 1))
        ends = np.concatenate((sp, [len(b)]))
    else:  # a word held a space byte (cannot happen after str.split, kept for safety)
        lens = np.fromiter((len(w.encode("utf-8", "surrogatepass")) for w in words), np.int64, len(words))
        ends = np.cumsum(lens + 1) - 1
        starts = ends - lens
    return b, starts.astype(np.int64), ends.astype(np.int64)


def word_hashes(words: list[str]) -> np.ndarray:
    b, s, e = words_bytes(words)
    return span_hashes(b, s, e)


def ngram_hashes(words: list[str], n: int, short_as_one: bool = True) -> np.ndarray:
    """Hashes of the word n-grams (shingles) of `words`; a text shorter than n words gives one shingle of all
    its words when `short_as_one` (so short documents still get a signature)."""
    nw = len(words)
    if nw == 0:
        return np.zeros(0, np.uint64)
    b, s, e = words_bytes(words)
    if nw < n:
        if not short_as_one:
            return np.zeros(0, np.uint64)
        return span_hashes(b, s[:1], e[-1:])
    return span_hashes(b, s[: nw - n + 1], e[n - 1 :])


def combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Order-dependent combination of two hash arrays (for n-grams of word hashes)."""
    return mix64(a * np.uint64(0x9E3779B97F4A7C15) + b)


# lid.176 codes of languages written without spaces between words.
CHAR_UNIT_LANGS = frozenset(["zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu"])
_HAN_KANA = "\u3005-\u3007\u3021-\u3029\u3031-\u3035\u3038-\u303c\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
_HAN_KANA += "\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
_LEAD_VOWELS = [*range(0x0E40, 0x0E45), *range(0x0EC0, 0x0EC5)]  # Thai and Lao vowels written before a consonant
_FOLLOW_VOWELS = [0x0E30, 0x0E32, 0x0E33, 0x0E45, 0x0EB0, 0x0EB2, 0x0EB3]  # ... and after it, as letters, not marks
_BLOCKS = [(0x0E00, 0x0EFF), (0x0F00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x17FF)]  # Thai+Lao, Tibetan, Burmese, Khmer


def _class(chars) -> str:
    """A regex character class body for a sorted iterable of code points (as ranges)."""
    out, run = [], []
    for c in chars:
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(re.escape(chr(run[0])) + ("-" + re.escape(chr(run[-1])) if len(run) > 1 else ""))
        run = [c]
    if run:
        out.append(re.escape(chr(run[0])) + ("-" + re.escape(chr(run[-1])) if len(run) > 1 else ""))
    return "".join(out)


@cache
def _patterns() -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    """(any unspaced-script letter, one word unit, a dedup non-word run); built on first use from the Unicode
    categories of the Basic Multilingual Plane."""
    cat = [unicodedata.category(chr(i)) for i in range(0x10000)]
    marks = _class(i for i in range(0x10000) if cat[i][0] == "M")
    opening = _class(i for i in range(0x10000) if cat[i] in ("Ps", "Pi"))
    closing = _class(i for i in range(0x10000) if cat[i] in ("Pe", "Pf", "Po"))
    vowels = set(_LEAD_VOWELS + _FOLLOW_VOWELS)
    base = _HAN_KANA + _class(i for a, b in _BLOCKS for i in range(a, b + 1) if cat[i][0] in "LN" and i not in vowels)
    lead, follow = _class(_LEAD_VOWELS), _class(_FOLLOW_VOWELS)
    letter = re.compile(f"[{base}]")
    unit = re.compile(f"[{opening}]*[{lead}]*[{base}][{marks}{follow}]*[{closing}]*|[^\\s{base}{lead}]+")
    non_word = re.compile(f"[^\\w\\s{marks}]+")  # punctuation and symbols; combining marks are part of words
    return letter, unit, non_word


def split_units(text: str, lang: str = "") -> tuple[list[str], np.ndarray | None]:
    """The word units of `text` (module docstring) and, per unit, whether it is written joined to the one
    before it (no space between); None when the units are exactly `text.split()`."""
    if text.isascii() or (lang and lang not in CHAR_UNIT_LANGS):
        return text.split(), None
    letter, unit, _ = _patterns()
    if letter.search(text) is None:
        return text.split(), None
    units: list[str] = []
    joined: list[bool] = []
    for tok in text.split():
        parts = unit.findall(tok) if letter.search(tok) else [tok]
        units += parts
        joined += [False] + [True] * (len(parts) - 1)
    return units, np.array(joined, bool)


def word_units(text: str, lang: str = "") -> list[str]:
    return split_units(text, lang)[0]


# Units per word where units are characters, for statistics defined over word n-grams (Gopher's): an n-word
# n-gram is about round(n * this) units. Typical word lengths: Chinese about 1.5 characters, Japanese about 2,
# Thai about 4 characters, 2.5 character clusters; others written without spaces are given 2.
UNITS_PER_WORD = {"zh": 1.5, "yue": 1.5, "wuu": 1.5, "ja": 2.0, "th": 2.5, "lo": 2.5}


def units_per_word(lang: str) -> float:
    return UNITS_PER_WORD.get(lang, 2.0) if lang in CHAR_UNIT_LANGS else 1.0


_ASCII_TABLE = bytes(ord("0") if chr(i).isdigit() else i for i in range(256))
_ASCII_DELETE = bytes(i for i in range(128) if not (chr(i).isalnum() or chr(i).isspace() or chr(i) == "_"))
_DIGITS = re.compile(r"\d")


def normalize(text: str) -> str:
    """Dedup normalisation (FineWeb / ccNet): lowercase, digits -> 0, punctuation (and symbols: everything
    that is neither a word character, a combining mark nor whitespace) removed. Line breaks are kept, so it
    also serves line dedup; whitespace runs are left for the caller's split() or split_units()."""
    text = text.lower()
    if text.isascii():  # fast path: one bytes.translate
        return text.encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE).decode("ascii")
    return _DIGITS.sub("0", _patterns()[2].sub("", text))


def hash_str(s: str, seed: int = 0) -> int:
    """A stable 64-bit hash of a string (xxh3)."""
    return xxhash.xxh3_64_intdigest(s.encode("utf-8", "surrogatepass"), seed)


def unit_hash(s: str, seed: int = 0) -> float:
    """A stable uniform number in [0, 1) from a string (for deterministic sampling decisions)."""
    return hash_str(s, seed) / 2.0**64
