"""Training byte-level BPE tokenizers in the Llama 3 format, and bridges to Hugging Face `tokenizers`.

- `train_bpe(texts, vocab_size)`: the `tokenizers` BPE trainer (Rust, fast) over the Llama 3 pre-tokenizer regex
  and a byte-level alphabet; its merges become tiktoken ranks (256 single bytes, then one rank per merge in
  merge order), and the 256 Llama 3 special tokens follow. `vocab_size` counts ranks + specials, so
  `train_bpe(texts, 8192).vocab_size == 8192` matches a model preset's vocab_size.
- `extend_bpe(base, texts, n_new)`: keep every rank of `base` and append `n_new` tokens learned on new text (how
  Llama 3 added 28K non-English tokens to tiktoken's 100K). The new text is first segmented by the base
  tokenizer; each base token becomes one symbol, and BPE continues over those symbols.
- `hf_tokenizer(tok)` / `from_hf_json(path)`: the same vocabulary as a `tokenizers.Tokenizer` (tokenizer.json),
  and back. Merges are derived from ranks (every split of a token into two lower-ranked tokens, ordered by the
  token's rank) and `ignore_merges` is set, which reproduces tiktoken's encoding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import regex  # tiktoken's dependency; unlike `re` it knows \p{L}
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from model.tokenizer import NUM_SPECIAL, PAT_STR, Tokenizer, llama3_special_tokens


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies: printable
    Latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_B2U = bytes_to_unicode()
_U2B = {c: b for b, c in _B2U.items()}


def token_str(token: bytes) -> str:
    return "".join(_B2U[b] for b in token)


def token_bytes(s: str) -> bytes:
    try:
        return bytes(_U2B[c] for c in s)
    except KeyError as e:
        raise ValueError(f"{s!r} is not a byte-level BPE token (character {e} has no byte)") from None


def _pre_tokenizer(pat_str: str = PAT_STR):
    # Split by the Llama 3 regex (each match is its own piece), then map bytes to characters without re-splitting.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pat_str), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def train_bpe(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2, max_token_length: int = 32
) -> Tokenizer:
    """A Llama 3 format tokenizer with exactly `vocab_size` ids: vocab_size - 256 ranks, then 256 specials.
    When the texts run out of pairs seen min_frequency times, training is redone with min_frequency=1; a corpus
    too small even for that is an error (ask for a smaller vocab_size)."""
    n_ranks = vocab_size - NUM_SPECIAL
    if n_ranks < 256:
        raise ValueError(f"vocab_size {vocab_size} leaves fewer than 256 ranks for the bytes after 256 specials")
    texts = texts if isinstance(texts, list) else list(texts)
    ranks = _train_ranks(texts, n_ranks, min_frequency, max_token_length)
    if len(ranks) < n_ranks and min_frequency > 1:
        ranks = _train_ranks(texts, n_ranks, 1, max_token_length)
    if len(ranks) < n_ranks:
        raise ValueError(
            f"the training texts ({sum(map(len, texts)):,} characters) support only {len(ranks) + NUM_SPECIAL} "
            f"ids, fewer than vocab_size {vocab_size}: pass more text or a smaller vocab_size"
        )
    return Tokenizer(ranks, llama3_special_tokens(len(ranks)))


def _train_ranks(texts: list[str], n_ranks: int, min_frequency: int, max_token_length: int) -> dict[bytes, int]:
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=n_ranks,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=max_token_length,
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer)
    ranks = {bytes([b]): b for b in range(256)}  # every byte, so any text can be encoded
    for left, right in _merges(hf):  # then one rank per merge, in the order the trainer learned them
        token = token_bytes(left) + token_bytes(right)
        if token not in ranks and len(ranks) < n_ranks:
            ranks[token] = len(ranks)
    return ranks


def _merges(hf: HFTokenizer) -> list[tuple[str, str]]:
    merges = json.loads(hf.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def _symbol(i: int) -> str:
    """One character per base token id (planes 2-3: never whitespace, never a surrogate)."""
    return chr(0x20000 + i)


def extend_bpe(base: Tokenizer, texts: Iterable[str], n_new: int, *, min_frequency: int = 2) -> Tokenizer:
    """`base` plus up to `n_new` ranks learned on `texts` (fewer only if the texts run out of pairs seen
    min_frequency times), then the 256 specials. Every base rank keeps its id, so base-token data stays valid;
    special ids move up by the number of new ranks."""
    if base.n_ranks + n_new > 0x20000:
        raise ValueError(f"extend_bpe supports at most {0x20000} ranks in all")
    split = regex.compile(base.pat_str)
    words: list[str] = []
    for text in texts:
        for piece in split.findall(text):
            words.append("".join(_symbol(i) for i in base.model.encode_ordinary(piece)))
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # words are joined by spaces; symbols are never spaces
    alphabet = sorted(set("".join(words)))
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + n_new + max(64, n_new // 8),  # slack: some merges repeat existing bytes
        min_frequency=min_frequency,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    hf.train_from_iterator([" ".join(words)], trainer)
    id_bytes = {r: t for t, r in base.ranks.items()}
    ranks = dict(base.ranks)
    for left, right in _merges(hf):
        token = b"".join(id_bytes[ord(c) - 0x20000] for c in left + right)
        if token not in ranks:
            ranks[token] = len(ranks)
            if len(ranks) == base.n_ranks + n_new:
                break
    return Tokenizer(ranks, llama3_special_tokens(len(ranks)), base.pat_str)


# ---- Hugging Face tokenizer.json ----
def hf_tokenizer(tok: Tokenizer) -> HFTokenizer:
    """The same vocabulary as a Hugging Face fast tokenizer (identical ids on ordinary text)."""
    ranks = tok.ranks
    vocab = {token_str(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        # Every way to build this token from two lower-ranked tokens, with the token's rank as priority.
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        for left, right in sorted(splits, key=lambda lr: (ranks[lr[0]], ranks[lr[1]])):
            merges.append((rank, token_str(left), token_str(right)))
    merges.sort(key=lambda m: m[0])
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[(a, b) for _, a, b in merges], ignore_merges=True))
    hf.pre_tokenizer = _pre_tokenizer(tok.pat_str)
    hf.decoder = decoders.ByteLevel()
    # add_special_tokens=True prepends <|begin_of_text|>, as Llama 3's own tokenizer.json does.
    bos = "<|begin_of_text|>"
    hf.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.bos_id)]
    )
    specials = sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    hf.add_special_tokens([AddedToken(name, special=True, normalized=False) for name, _ in specials])
    got = {name: hf.token_to_id(name) for name, _ in specials}
    if got != dict(specials):
        raise ValueError(
            "special token ids do not follow the ranks contiguously; cannot express them in tokenizer.json"
        )
    return hf


def from_hf_json(path: str | os.PathLike) -> Tokenizer:
    """A byte-level BPE tokenizer.json (e.g. Llama 3's) as a Tokenizer: vocab ids become ranks, added special
    tokens keep their ids, and the Split pre-tokenizer's regex is kept."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model, added = data["model"], data.get("added_tokens", [])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a tokenizer.json: {e}") from None
    if model.get("type") != "BPE":
        raise ValueError(f"{path}: model type {model.get('type')!r}, expected byte-level 'BPE'")
    special_ids = {a["id"] for a in added}
    ranks = {token_bytes(s): i for s, i in model["vocab"].items() if i not in special_ids}
    specials = {a["content"]: a["id"] for a in added}
    pat_str = PAT_STR
    for pre in _walk(data.get("pre_tokenizer")):
        if pre.get("type") == "Split" and "Regex" in pre.get("pattern", {}):
            pat_str = pre["pattern"]["Regex"]
    return Tokenizer(ranks, specials, pat_str)


def _walk(node):
    if isinstance(node, dict):
        yield node
        for child in node.get("pretokenizers", []):
            yield from _walk(child)


def tokenizer_from_spec(spec: str | os.PathLike) -> Tokenizer:
    """The tokenizer a config names: "llama3" (the official 128,000 ranks), a herd tokenizer directory
    (tokenizer.model + specials), or a Hugging Face tokenizer.json (the file, or a directory holding only it).
    Relative paths are the caller's to resolve (tools.paths.user_path, or a pipeline's Env.path)."""
    if str(spec) == "llama3":
        return Tokenizer.llama3()
    path = Path(spec)
    if path.suffix == ".json" or ((path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file()):
        return from_hf_json(path if path.suffix == ".json" else path / "tokenizer.json")
    if not (path / "tokenizer.model").is_file():
        raise FileNotFoundError(f"tokenizer {path}: no tokenizer.model (herd format) or tokenizer.json (Hugging Face)")
    return Tokenizer.load(path)
