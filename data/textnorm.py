"""Text normalisation and fast vectorised hashing shared by the dedup, heuristic and classifier steps.

Hashing whole words or word n-grams one Python call at a time is what makes pure-Python pipelines slow.
Here a text is encoded once to UTF-8 bytes and every span's hash comes out of one numpy pass: a polynomial
hash over bytes, made position-independent with prefix sums of c_k * B^-k (B is odd, so it has an inverse
mod 2^64), then scrambled with the splitmix64 finaliser. Hashes are deterministic across processes and
machines (Python's own `hash()` of a str is not).
"""

from __future__ import annotations

import re

import numpy as np
import xxhash

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


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (a bijection that spreads every input bit)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


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


_ASCII_TABLE = bytes(ord("0") if chr(i).isdigit() else i for i in range(256))
_ASCII_DELETE = bytes(i for i in range(128) if not (chr(i).isalnum() or chr(i).isspace() or chr(i) == "_"))
_NON_WORD = re.compile(r"[^\w\s]+")
_DIGITS = re.compile(r"\d")


def normalize(text: str) -> str:
    """Dedup normalisation (FineWeb / ccNet): lowercase, digits -> 0, punctuation (and symbols: everything
    that is neither a word character nor whitespace) removed. Line breaks are kept, so it also serves line
    dedup; whitespace runs are left for the caller's split()."""
    text = text.lower()
    if text.isascii():  # fast path: one bytes.translate
        return text.encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE).decode("ascii")
    return _DIGITS.sub("0", _NON_WORD.sub("", text))


def hash_str(s: str, seed: int = 0) -> int:
    """A stable 64-bit hash of a string (xxh3)."""
    return xxhash.xxh3_64_intdigest(s.encode("utf-8", "surrogatepass"), seed)


def unit_hash(s: str, seed: int = 0) -> float:
    """A stable uniform number in [0, 1) from a string (for deterministic sampling decisions)."""
    return hash_str(s, seed) / 2.0**64
