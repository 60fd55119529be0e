"""The Llama 3 tokenizer: tiktoken byte-level BPE, the Llama 3 pre-tokenizer regex, 256 special tokens.

`Tokenizer.llama3()` loads the official 128,000 ranks shipped in the `llama-models` package
(llama_models/llama3/tokenizer.model) and gives ids identical to Meta's own tokenizer, including its handling
of very long inputs: text is cut into 400,000-character pieces, and each piece is cut wherever a run of
whitespace or of non-whitespace exceeds 25,000 characters (tiktoken's recursion limit, tiktoken issue 195).

A tokenizer directory (`save`/`load`) holds `tokenizer.model` (one `base64(token) rank` line per rank, the
format of Meta's file) and `special_tokens.json` (the regex and the special tokens), so trained tokenizers
(model/bpe.py) round-trip in the same format.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tiktoken

from tools import atomic

# Pre-tokenizer of Llama 3 (paper section 3; Meta's tokenizer.py): contractions, letter runs with one optional
# leading non-letter, numbers of at most 3 digits, punctuation runs, newlines, and whitespace.
PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
NUM_SPECIAL = 256
# The named special tokens in id order (ids n_ranks + i); the rest of the 256 are reserved_special_token_{2..}.
NAMED_SPECIAL = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",  # end of message (a tool call follows)
    "<|eot_id|>",  # end of turn
    "<|python_tag|>",
    "<|image|>",
)
MAX_ENCODE_CHARS = 400_000  # tiktoken handles up to this many characters per call without a panic
MAX_RUN_CHARS = 25_000  # longest run of whitespace or non-whitespace given to tiktoken in one piece
_LONG_RUN = re.compile(rf"\s{{{MAX_RUN_CHARS + 1},}}|\S{{{MAX_RUN_CHARS + 1},}}")
RANKS_FILE, SPECIAL_FILE = "tokenizer.model", "special_tokens.json"
CHAT_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "ipython": "ipython", "tool": "ipython"}


def llama3_special_tokens(n_ranks: int) -> dict[str, int]:
    """The 256 Llama 3 special tokens with their ids, placed after `n_ranks` ordinary tokens."""
    reserved = [f"<|reserved_special_token_{2 + i}|>" for i in range(NUM_SPECIAL - len(NAMED_SPECIAL))]
    return {name: n_ranks + i for i, name in enumerate(NAMED_SPECIAL + tuple(reserved))}


def default_ranks_path() -> Path:
    """The official Llama 3 tokenizer.model inside the installed llama-models package."""
    import llama_models

    path = Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"
    if not path.is_file():
        raise FileNotFoundError(f"Llama 3 tokenizer.model not found at {path} (is llama-models installed?)")
    return path


def load_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Parse a tiktoken ranks file (`base64(token) rank` per line); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer ranks file {path} does not exist")
    ranks: dict[bytes, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
                if len(parts) != 2:
                    raise ValueError
            except (ValueError, IndexError):
                found = line.strip()[:80]
                raise ValueError(f"{path}:{lineno}: expected 'base64-token rank', found {found!r}") from None
            if token in ranks:
                raise ValueError(f"{path}:{lineno}: token {token!r} appears twice (ranks {ranks[token]} and {rank})")
            ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks must be exactly 0..{len(ranks) - 1}, each once")
    return ranks


def ranks_text(ranks: dict[bytes, int]) -> str:
    return "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))


def split_long_runs(text: str) -> list[str]:
    """Meta's input splitting: 400K-character pieces, each cut inside any whitespace / non-whitespace run
    longer than 25K characters (every 25K characters from the run's start). Same cuts as Meta's per-character
    loop, found with one regex scan (`\\s` in `re` is exactly `str.isspace`)."""
    pieces = []
    for start in range(0, len(text), MAX_ENCODE_CHARS):
        chunk = text[start : start + MAX_ENCODE_CHARS]
        prev = 0
        for run in _LONG_RUN.finditer(chunk):
            for cut in range(run.start() + MAX_RUN_CHARS, run.end(), MAX_RUN_CHARS):
                pieces.append(chunk[prev:cut])
                prev = cut
        pieces.append(chunk[prev:])
    return pieces


class Tokenizer:
    """Byte-level BPE over tiktoken. `vocab_size` = ordinary ranks + special tokens."""

    def __init__(self, ranks: dict[bytes, int], special_tokens: dict[str, int] | None = None, pat_str: str = PAT_STR):
        special_tokens = dict(special_tokens) if special_tokens is not None else llama3_special_tokens(len(ranks))
        clash = sorted(set(special_tokens.values()) & set(range(len(ranks))))
        if clash:
            raise ValueError(f"special token ids overlap the ordinary ranks 0..{len(ranks) - 1}: {clash[:5]}")
        for name in ("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"):
            if name not in special_tokens:
                raise ValueError(f"special tokens lack {name}")
        self.ranks, self.special_tokens, self.pat_str = ranks, special_tokens, pat_str
        self.model = tiktoken.Encoding(
            name="herd", pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special_tokens
        )
        self.n_ranks = len(ranks)
        self.vocab_size = max(max(ranks.values(), default=-1), max(special_tokens.values(), default=-1)) + 1
        self.bos_id = special_tokens["<|begin_of_text|>"]
        self.eos_id = special_tokens["<|end_of_text|>"]
        self.eot_id = special_tokens["<|eot_id|>"]
        self.eom_id = special_tokens.get("<|eom_id|>")
        self.pad_id = special_tokens.get("<|finetune_right_pad_id|>")
        # Generation ends at end of text, end of turn, or end of message (Meta's stop tokens).
        self.stop_tokens = tuple(t for t in (self.eos_id, self.eom_id, self.eot_id) if t is not None)
        self._id_to_special = {i: s for s, i in special_tokens.items()}

    # ---- construction and files ----
    @classmethod
    def llama3(cls, path: str | os.PathLike | None = None) -> Tokenizer:
        """The official Llama 3 tokenizer: 128,000 ranks (from llama-models, or `path`) + 256 specials."""
        return _llama3_cached(str(Path(path).resolve()) if path is not None else str(default_ranks_path()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """A tokenizer directory written by `save` (or a bare tiktoken ranks file: Llama 3 specials are added)."""
        path = Path(path)
        if path.is_file():
            return cls(load_ranks(path))
        if not (path / RANKS_FILE).is_file():
            raise FileNotFoundError(f"tokenizer directory {path} has no {RANKS_FILE}")
        ranks = load_ranks(path / RANKS_FILE)
        meta_path = path / SPECIAL_FILE
        if not meta_path.is_file():
            return cls(ranks)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            specials = {str(k): int(v) for k, v in meta["special_tokens"].items()}
            pat_str = str(meta.get("pat_str", PAT_STR))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{meta_path}: expected {{'special_tokens': {{name: id}}, 'pat_str': ...}}: {e}") from None
        if meta.get("n_ranks", len(ranks)) != len(ranks):
            raise ValueError(f"{meta_path}: n_ranks {meta['n_ranks']} but {path / RANKS_FILE} has {len(ranks)} ranks")
        return cls(ranks, specials, pat_str)

    def files(self) -> dict[str, bytes]:
        """The tokenizer directory's files: tokenizer.model (Meta's ranks format) and special_tokens.json."""
        meta = {
            "format": "herd.tokenizer/1",
            "n_ranks": self.n_ranks,
            "vocab_size": self.vocab_size,
            "pat_str": self.pat_str,
            "special_tokens": self.special_tokens,
        }
        return {RANKS_FILE: ranks_text(self.ranks).encode(), SPECIAL_FILE: (json.dumps(meta, indent=1) + "\n").encode()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer directory atomically (replacing an existing one)."""
        with atomic.directory(path) as tmp:
            for name, data in self.files().items():
                (tmp / name).write_bytes(data)
        return Path(path)

    def fingerprint(self) -> str:
        """sha256 of the ranks, regex and special tokens (to check that data and model share a tokenizer)."""
        h = hashlib.sha256(ranks_text(self.ranks).encode())
        h.update(json.dumps([self.pat_str, sorted(self.special_tokens.items())]).encode())
        return h.hexdigest()

    def describe(self) -> dict:
        """A small JSON-able description (e.g. for a shard manifest)."""
        return {"vocab_size": self.vocab_size, "n_ranks": self.n_ranks, "bos_id": self.bos_id,
                "eos_id": self.eos_id, "eot_id": self.eot_id, "sha256": self.fingerprint()}  # fmt: skip

    def __getstate__(self):  # picklable for process pools: rebuild tiktoken on the other side
        return {"ranks": self.ranks, "special_tokens": self.special_tokens, "pat_str": self.pat_str}

    def __setstate__(self, state):
        self.__init__(state["ranks"], state["special_tokens"], state["pat_str"])

    # ---- encoding ----
    def encode(
        self, text: str, *, bos: bool = False, eos: bool = False, allowed_special: Iterable[str] | str = frozenset()
    ) -> list[int]:
        """Token ids of `text`. Special-token text (e.g. "<|eot_id|>") is ordinary text unless named in
        `allowed_special` (or allowed_special="all")."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special names unknown special tokens: {sorted(unknown)[:5]}")
        ids = [self.bos_id] if bos else []
        if len(text) <= MAX_RUN_CHARS:  # fast path: no piece can need splitting
            pieces = [text] if text else []
        else:
            pieces = split_long_runs(text)
        for piece in pieces:
            if allowed:
                ids.extend(self.model.encode(piece, allowed_special=allowed, disallowed_special=()))
            else:
                ids.extend(self.model.encode_ordinary(piece))
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_batch(
        self, texts: Sequence[str], *, bos: bool = False, eos: bool = False, num_threads: int = 8
    ) -> list[list[int]]:
        """Encode many texts on `num_threads` threads (tiktoken releases the GIL while encoding)."""
        if num_threads <= 1 or len(texts) <= 1:
            return [self.encode(t, bos=bos, eos=eos) for t in texts]
        with ThreadPoolExecutor(num_threads) as pool:
            return list(pool.map(functools.partial(self.encode, bos=bos, eos=eos), texts))

    def encode_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        """Llama 3 chat format: <|begin_of_text|>, then per message
        <|start_header_id|>role<|end_header_id|>\\n\\n content <|eot_id|>; with `add_generation_prompt`, an empty
        assistant header for the model to continue. Message text is never parsed for special tokens."""
        ids = [self.bos_id]
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ValueError(f"chat message {i} must be a dict with 'role' and 'content', got {message!r:.80}")
            if message["role"] not in CHAT_ROLES:
                raise ValueError(f"chat message {i}: unknown role {message['role']!r} (known: {sorted(CHAT_ROLES)})")
            if not isinstance(message["content"], str):
                raise ValueError(f"chat message {i}: content must be str, got {type(message['content']).__name__}")
            ids += self.encode_header(message["role"]) + self.encode(message["content"]) + [self.eot_id]
        if add_generation_prompt:
            ids += self.encode_header("assistant")
        return ids

    def encode_header(self, role: str) -> list[int]:
        start, end = self.special_tokens["<|start_header_id|>"], self.special_tokens["<|end_header_id|>"]
        return [start, *self.encode(CHAT_ROLES.get(role, role)), end, *self.encode("\n\n")]

    # ---- decoding ----
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` (special tokens as their names; invalid UTF-8 becomes U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not (0 <= i < self.n_ranks or i in self._id_to_special)]
        if bad:
            raise ValueError(f"token ids outside the vocabulary (size {self.vocab_size}): {bad[:5]}")
        return self.model.decode_bytes(ids)

    def token_bytes(self, token_id: int) -> bytes:
        return self.decode_bytes([token_id])

    def is_special(self, token_id: int) -> bool:
        return token_id in self._id_to_special

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(n_ranks={self.n_ranks}, vocab_size={self.vocab_size})"


@functools.lru_cache(maxsize=4)
def _llama3_cached(path: str) -> Tokenizer:
    ranks = load_ranks(path)
    return Tokenizer(ranks, llama3_special_tokens(len(ranks)))
