"""Long-context SFT data (Llama 3 paper section 4.3.4): dialogs whose context is a whole long document or much of a
Python repository. `python -m data.posttrain.long_context output=lc [chunk_tokens=1024 tokenizer=llama3 ...]`

    long_context/qa          long documents are cut into 8K-token chunks; a model writes a question and its answer
                             from a randomly chosen chunk; the training dialog holds the whole document
    long_context/summary     hierarchical summaries: each chunk is summarised, then the summaries (`summary_fanout`
                             at a time) until one is left; the dialog asks for a summary of the whole document
    long_context/summary_qa  a question written from that summary (the paper's questions "that require global
                             understanding of the whole long document"), asked over the whole document
    long_context/code        imports parsed with `ast`; of the files at least five others import, one is removed
                             and the model is asked which files depend on it and to write it (its real content)

Questions and summaries are written by `Generator`s, prompt -> completion, so a real model drops in (`build(cfg,
qa=..., summarize=...)`). The defaults are deterministic extractive stand-ins for toy scale: a sentence of the chunk
with a key word blanked (the word is the answer), and the leading sentences of equal stretches of the text.
The paper mixes 0.1% of long-context data into SFT (`mix_count`, `mix_sample`) and buckets dialogs by length.
"""

from __future__ import annotations

import ast
import bisect
import math
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from data.dialogs import Dialog, write_jsonl
from tools import assets, atomic
from tools.config import parse
from tools.paths import user_path

Generator = Callable[[str], str]  # prompt -> completion: a model's generate, or the extractive stand-ins below
Count = Callable[[str], int]  # text -> tokens

CHARS_PER_TOKEN = 4  # the stand-in tokenizer's rate; the Llama 3 tokenizer gives ~4.3 characters a token on the essays
SHARE = 0.001  # of the SFT mix (the paper's ablations: 0.1% keeps short- and long-context benchmarks up)
LENGTH_BUCKETS = (16_384, 32_768, 65_536, 131_072)  # the paper's sequence-length categories
CHAT_TOKENS = 11  # a user-assistant dialog's chat format: <|begin_of_text|>, per turn a 4-token header and <|eot_id|>

QA_PROMPT = (
    "Write one question that the text below answers, and the answer, taken from the text. Reply in two lines: "
    "'Question: ...' and 'Answer: ...'.\n\n<text>\n{text}\n</text>"
)
SUMMARY_PROMPT = "Summarize the text below, preserving all the important details.\n\n<text>\n{text}\n</text>"
QA_REPLY = re.compile(r"Question:\s*(\S.*?)\s*\nAnswer:\s*(\S.*?)\s*$", re.S)
# Sentence ends: punctuation then space, or then a capital with no space (the essays lost their paragraph breaks:
# "...he had designed.What does make a language popular?").
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[a-z][.!?])(?=[A-Z])")
# Where a chunk may end: before a run of whitespace (a word keeps the space before it, as the Llama 3 tokenizer
# splits text: " word").
WORD_CUT = re.compile(r"(?<=\S)(?=\s)")


@dataclass
class LongContextConfig:
    documents: str = "assets:niah/paul_graham_essays"  # a text file, or a folder (every file); assets:<path> or a path
    repository: str = "."  # the Python tree of the code task ("" skips it); "." is where you ran the command
    output: str = "long_context"  # folder: dialogs.jsonl and stats.json
    tokenizer: str = ""  # measures chunks and dialogs: "" (4 characters a token), llama3, or a tokenizer folder
    chunk_tokens: int = 8192  # the paper's 8K chunks; a document shorter than one chunk is dropped
    qa_per_document: int = 1  # questions, each from its own randomly chosen chunk
    summary_fanout: int = 8  # summaries summarised together at each level above the chunks
    min_dependents: int = 5  # a code-task file is imported by at least this many other files (the paper's five)
    code_dialogs: int = 8  # removed files (drawn with the seed), one dialog each
    code_tokens: int = 32_768  # the longest code dialog, in the chat format (question and answer)
    seed: int = 0


LEAST = {"chunk_tokens": 1, "qa_per_document": 1, "summary_fanout": 2, "min_dependents": 1, "code_tokens": 1}


@dataclass
class Stats:
    documents_in: int = 0
    documents_kept: int = 0
    chunks: int = 0
    python_files: int = 0
    import_edges: int = 0
    key_files: int = 0  # files imported by >= min_dependents others
    dialogs: Counter = field(default_factory=Counter)  # by source
    lengths: Counter = field(default_factory=Counter)  # dialogs by the paper's length bucket
    dropped: Counter = field(default_factory=Counter)  # "<what>: <reason>"

    def as_dict(self) -> dict:
        return {k: dict(sorted(v.items())) if isinstance(v, Counter) else v for k, v in vars(self).items()}


# ---- tokens and chunks ----
def approx_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def token_counter(spec: str) -> Count:
    """The counter a config names: "" the character approximation, else model.bpe.tokenizer_from_spec's tokenizer."""
    if not spec:
        return approx_tokens
    from model.bpe import tokenizer_from_spec

    tok = tokenizer_from_spec(spec if spec == "llama3" else user_path(spec))
    return lambda text: len(tok.encode(text))


def _last_fitting(text: str, start: int, ends: list[int] | range, size: int, count: Count) -> int:
    """The largest j with text[start : ends[j]] within `size` tokens (ends ascending), -1 when none. Gallops
    (j = 0, 1, 3, 7, ...) then bisects: O(log n) counts, each of at most about two chunks of text."""
    good, step = -1, 1
    while good + step < len(ends) and count(text[start : ends[good + step]]) <= size:
        good, step = good + step, step * 2
    bad = min(good + step, len(ends))
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if count(text[start : ends[mid]]) <= size else (good, mid)
    return good


def chunk(text: str, size: int, count: Count) -> list[str]:
    """Consecutive chunks of at most `size` tokens, cut between words, each as long as the next word allows (the
    last one may be short); "".join(chunks) == text. Each chunk is measured whole, so any tokenizer's count is exact.
    A word longer than a chunk is cut between characters."""
    ends = [m.start() for m in WORD_CUT.finditer(text)] + [len(text)]  # where a chunk may end, ascending
    chunks, start = [], 0
    while start < len(text):
        ahead = ends[bisect.bisect_right(ends, start) :]
        j = _last_fitting(text, start, ahead, size, count)
        if j >= 0:
            end = ahead[j]
        else:  # the next word alone is over the size
            inside = range(start + 1, ahead[0])
            end = max(start + 1, start + 1 + _last_fitting(text, start, inside, size, count))
        chunks.append(text[start:end])
        start = end
    return chunks


def sentences(text: str) -> list[str]:
    """The sentences of `text`, whitespace collapsed."""
    return [" ".join(s.split()) for s in SENTENCE_END.split(text) if s.strip()]


# ---- the extractive stand-ins for the generating model ----
def material(prompt: str) -> str:
    """The text a QA_PROMPT or SUMMARY_PROMPT was made for."""
    return prompt.rpartition("<text>\n")[2].rpartition("\n</text>")[0]


@dataclass
class ExtractiveQA:
    """Stand-in for the model that writes QA pairs: a sentence of the text (drawn with the seed) with its key word
    blanked: the first number or capitalised word after the sentence's first word, else its longest word of 5+
    letters. The word is the answer, so the answer is in the text verbatim. Empty when no sentence has 8-60 words."""

    seed: int = 0

    @staticmethod
    def key(words: list[str]) -> int | None:
        bare = [w.strip(".,;:!?\"'()[]") for w in words]
        for i, w in enumerate(bare[1:], 1):
            if len(w) >= 3 and w.isalnum() and (w[0].isupper() or w.isdigit()):
                return i
        long = [i for i, w in enumerate(bare) if len(w) >= 5 and w.isalpha()]
        return max(long, key=lambda i: len(bare[i])) if long else None

    def __call__(self, prompt: str) -> str:
        text = material(prompt)
        candidates = [s for s in sentences(text) if 8 <= len(s.split()) <= 60]
        random.Random(f"{self.seed}:{text}").shuffle(candidates)
        for sentence in candidates:
            words = sentence.split()
            i = self.key(words)
            if i is None:
                continue
            answer = words[i].strip(".,;:!?\"'()[]")
            words[i] = words[i].replace(answer, "____", 1)
            question = f'Which word fills the blank in this sentence of the text: "{" ".join(words)}"'
            return f"Question: {question}\nAnswer: {answer}"
        return ""


def extractive_summary(prompt: str, n: int = 4) -> str:
    """Stand-in for the summarising model: the first sentence of each of `n` equal stretches of the text's sentences
    (lead sentences that cover all of it, so a summary of summaries draws on every chunk)."""
    s = sentences(material(prompt))
    k = min(n, len(s))
    return " ".join(s[i * len(s) // k] for i in range(k))


def parse_qa(reply: str) -> tuple[str, str] | None:
    m = QA_REPLY.search(reply.strip())
    return (m.group(1), m.group(2)) if m else None


def summarize(chunks: list[str], generate: Generator, fanout: int) -> list[list[str]]:
    """Hierarchical summaries: levels[0] summarises each chunk, each next level `fanout` consecutive summaries of the
    level below, until one is left: levels[-1][0] is the document's summary."""
    levels = [[generate(SUMMARY_PROMPT.format(text=c)) for c in chunks]]
    while len(levels[-1]) > 1:
        below = levels[-1]
        groups = ["\n\n".join(below[i : i + fanout]) for i in range(0, len(below), fanout)]
        levels.append([generate(SUMMARY_PROMPT.format(text=g)) for g in groups])
    return levels


# ---- documents: QA and summaries ----
def read_documents(spec: str, stats: Stats) -> list[tuple[str, str]]:
    """(name, text) of a text file or of every file in a folder (sorted); an empty or non-UTF-8 file is dropped."""
    root = assets.resolve(spec)
    if not root.exists():
        raise FileNotFoundError(f"documents {root} do not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    docs = []
    for f in files:
        stats.documents_in += 1
        try:
            text = f.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            stats.dropped["document: not UTF-8"] += 1
            continue
        if not text.strip():
            stats.dropped["document: empty"] += 1
            continue
        docs.append((str(f.relative_to(root)) if root.is_dir() else f.name, text))
    return docs


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _with_document(document: str, request: str) -> list[dict]:
    """The training dialog's user turn: the whole document, then the request (the paper's long context)."""
    return [{"role": "user", "content": f"<document>\n{document}\n</document>\n\n{request}"}]


def document_dialogs(
    docs: Iterable[tuple[str, str]],
    cfg: LongContextConfig,
    count: Count,
    qa: Generator,
    summarize_fn: Generator,
    stats: Stats | None = None,
) -> tuple[list[Dialog], Stats]:
    """QA, summary and summary-QA dialogs of each document at least one chunk long; counted into `stats`."""
    stats, out = stats or Stats(), []
    for name, text in docs:
        if count(text) < cfg.chunk_tokens:
            stats.dropped["document: shorter than one chunk"] += 1
            continue
        stats.documents_kept += 1
        chunks = chunk(text, cfg.chunk_tokens, count)
        stats.chunks += len(chunks)
        rng = random.Random(f"{cfg.seed}/{name}")
        for i in sorted(rng.sample(range(len(chunks)), min(cfg.qa_per_document, len(chunks)))):
            pair = parse_qa(qa(QA_PROMPT.format(text=chunks[i])))
            if pair is None:
                stats.dropped["qa: no question and answer in the reply"] += 1
                continue
            out.append(Dialog(_with_document(text, pair[0]) + [_assistant(pair[1])], "long_context/qa"))
        summary = summarize(chunks, summarize_fn, cfg.summary_fanout)[-1][0]
        if not summary.strip():
            stats.dropped["summary: empty"] += 1
            continue
        request = "Summarize the document, preserving all the important details."
        out.append(Dialog(_with_document(text, request) + [_assistant(summary)], "long_context/summary"))
        pair = parse_qa(qa(QA_PROMPT.format(text=summary)))
        if pair is None:
            stats.dropped["summary_qa: no question and answer in the reply"] += 1
            continue
        out.append(Dialog(_with_document(text, pair[0]) + [_assistant(pair[1])], "long_context/summary_qa"))
    return out, stats


# ---- the repository: import graph and the code task ----
@dataclass
class Repository:
    files: dict[str, str]  # path relative to the root -> source, for every UTF-8 file that parses
    imports: dict[str, set[str]]  # path -> the paths of the tree it imports (lazy imports inside functions too)
    dropped: Counter = field(default_factory=Counter)

    def dependents(self) -> dict[str, set[str]]:
        """path -> the other files that import it."""
        out = {path: set() for path in self.files}
        for src, dsts in self.imports.items():
            for dst in dsts:
                out[dst].add(src)
        return out

    def key_files(self, min_dependents: int) -> list[str]:
        """The files at least `min_dependents` other files import (sorted)."""
        return sorted(p for p, d in self.dependents().items() if len(d) >= min_dependents)


def module_name(path: str) -> str:
    """a/b/c.py -> a.b.c; a/b/__init__.py -> a.b."""
    parts = path[: -len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool, modules: dict[str, str]) -> list[str]:
    """The modules of the tree an import statement names: for `import a.b.c` and `from a.b import c`, the longest
    name that is a module of the tree (`c` may be a submodule or a name defined in a.b)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: up from the importing file's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            up = package[: len(package) - (node.level - 1)] if node.level - 1 <= len(package) else []
            base = ".".join(up + ([base] if base else []))
        names = [f"{base}.{a.name}" if base else a.name for a in node.names]
    out = []
    for name in names:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in modules:
                out.append(modules[".".join(parts[:n])])
                break
    return out


def read_repository(root: str | Path) -> Repository:
    """Every .py file under `root` (hidden folders and __pycache__ skipped) and the import graph between them. A
    file that is not UTF-8 or does not parse is dropped and counted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"repository {root} is not a folder")
    paths = []
    for folder, subfolders, names in os.walk(root):  # not rglob: it would walk .venv before skipping it
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "__pycache__"]
        paths += [(Path(folder) / n).relative_to(root).as_posix() for n in names if n.endswith(".py")]
    paths.sort()
    files, trees, dropped = {}, {}, Counter()
    for path in paths:
        try:
            text = (root / path).read_bytes().decode("utf-8")
            trees[path] = ast.parse(text, path)
        except UnicodeDecodeError:
            dropped["python file: not UTF-8"] += 1
            continue
        except (SyntaxError, ValueError):  # ValueError: a NUL byte
            dropped["python file: does not parse"] += 1
            continue
        files[path] = text
    modules = {module_name(p): p for p in files}
    imports = {}
    for path, tree in trees.items():
        module, is_package = module_name(path), path.endswith("__init__.py")
        found = {
            dst
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for dst in _imported(node, module, is_package, modules)
        }
        imports[path] = found - {path}
    return Repository(files, imports, dropped)


def _file_block(path: str, text: str) -> str:
    return f"### {path}\n```python\n{text}\n```\n"


def _answer(path: str, dependents: list[str], removed: str) -> str:
    return f"The files that import {path}: {', '.join(dependents)}.\n\n{removed}"


def code_dialog(repo: Repository, path: str, budget: int, min_dependents: int, count: Count) -> Dialog | str:
    """The dialog with `path` removed: the user turn holds other files of the tree (its dependents first, then the
    rest by path, each while the dialog stays within `budget` tokens; shown sorted by path), the answer names the
    shown files that import it and gives its real content. A reason string when it cannot be built."""
    dependents = sorted(repo.dependents()[path])
    question = (
        f"Above are files of a Python repository from which {path} was removed. "
        f"Which of these files depend on {path}? Then write {path}."
    )
    removed = f"{path}:\n```python\n{repo.files[path]}\n```"
    # The answer is longest when every dependent is shown; 1 token for the newline before the question.
    used = CHAT_TOKENS + count(question) + count(_answer(path, dependents, removed)) + 1
    if used > budget:
        return "file longer than the budget"
    shown = []
    for other in dependents + sorted(set(repo.files) - {path} - set(dependents)):
        n = count(_file_block(other, repo.files[other]))
        if used + n <= budget:
            shown.append(other)
            used += n
    shown_dependents = [d for d in dependents if d in shown]
    if len(shown_dependents) < min_dependents:
        return "its dependents do not fit the budget"
    context = "".join(_file_block(p, repo.files[p]) for p in sorted(shown))
    answer = _answer(path, shown_dependents, removed)
    return Dialog([{"role": "user", "content": f"{context}\n{question}"}, _assistant(answer)], "long_context/code")


def code_dialogs(
    repo: Repository, cfg: LongContextConfig, count: Count, stats: Stats | None = None
) -> tuple[list[Dialog], Stats]:
    """A code dialog for each of `code_dialogs` key files drawn with the seed; counted into `stats`."""
    stats = stats or Stats()
    stats.python_files += len(repo.files) + sum(repo.dropped.values())
    stats.dropped.update(repo.dropped)
    stats.import_edges += sum(len(d) for d in repo.imports.values())
    keys = repo.key_files(cfg.min_dependents)
    stats.key_files += len(keys)
    candidates = [k for k in keys if repo.files[k].strip()]
    if len(candidates) < len(keys):  # an empty __init__.py is no file to write
        stats.dropped["code: key file empty"] += len(keys) - len(candidates)
    counted: dict[str, int] = {}

    def cached(text: str) -> int:  # every dialog measures the same file blocks: count each once
        if text not in counted:
            counted[text] = count(text)
        return counted[text]

    out = []
    for path in random.Random(cfg.seed).sample(candidates, min(cfg.code_dialogs, len(candidates))):
        dialog = code_dialog(repo, path, cfg.code_tokens, cfg.min_dependents, cached)
        if isinstance(dialog, str):
            stats.dropped[f"code: {dialog}"] += 1
        else:
            out.append(dialog)
    return out, stats


# ---- the SFT mix ----
def mix_count(n_other: int, share: float = SHARE) -> int:
    """How many long-context dialogs to add to `n_other` other SFT dialogs: the fewest that make at least `share` of
    the mix (share = n / (n_other + n)); exact in fractions, so 999 others at 0.001 need exactly 1."""
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    s = Fraction(str(share))
    return math.ceil(s * n_other / (1 - s))


def mix_sample(dialogs: list[Dialog], n_other: int, share: float = SHARE, seed: int = 0) -> list[Dialog]:
    """`mix_count` of the dialogs (all of them when there are fewer), drawn with the seed, in their order."""
    n = min(mix_count(n_other, share), len(dialogs))
    return [dialogs[i] for i in sorted(random.Random(seed).sample(range(len(dialogs)), n))]


# ---- everything, and the CLI ----
def _bucket(tokens: int) -> str:
    return next((f"<={b // 1024}K" for b in LENGTH_BUCKETS if tokens <= b), f">{LENGTH_BUCKETS[-1] // 1024}K")


def build(
    cfg: LongContextConfig, count: Count | None = None, qa: Generator | None = None, summarize: Generator | None = None
) -> tuple[list[Dialog], Stats]:
    """Every dialog of `cfg` and the stats; `count`, `qa` and `summarize` replace the config's tokenizer and the
    extractive stand-ins."""
    for key, least in LEAST.items():
        if getattr(cfg, key) < least:
            raise ValueError(f"{key} must be >= {least}, got {getattr(cfg, key)}")
    count, qa, stats = count or token_counter(cfg.tokenizer), qa or ExtractiveQA(cfg.seed), Stats()
    docs = read_documents(cfg.documents, stats)
    dialogs, _ = document_dialogs(docs, cfg, count, qa, summarize or extractive_summary, stats)
    if cfg.repository:
        dialogs += code_dialogs(read_repository(user_path(cfg.repository)), cfg, count, stats)[0]
    for d in dialogs:
        stats.dialogs[d.source] += 1
        stats.lengths[_bucket(CHAT_TOKENS + sum(count(m["content"]) for m in d.messages))] += 1
    return dialogs, stats


def write(cfg: LongContextConfig, **generators) -> Stats:
    """output/dialogs.jsonl (data.dialogs' contract) and output/stats.json, each written atomically."""
    dialogs, stats = build(cfg, **generators)
    out = user_path(cfg.output)
    write_jsonl(out / "dialogs.jsonl", dialogs)
    atomic.write_json(out / "stats.json", stats.as_dict())
    return stats


def main(argv: list[str] | None = None) -> int:
    """The CLI: a bad key, value or input is one line on stderr and exit 2; a disk problem exit 1."""
    try:
        cfg = parse(LongContextConfig, sys.argv[1:] if argv is None else argv)
        stats = write(cfg)
    except (ValueError, FileNotFoundError, assets.AssetError) as e:  # tools.config.ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    kinds = ", ".join(f"{n} {source.split('/')[1]}" for source, n in sorted(stats.dialogs.items()))
    print(
        f"{stats.documents_in} documents in, {stats.documents_kept} kept ({stats.chunks} chunks); "
        f"{stats.python_files} Python files, {stats.key_files} imported by >= {cfg.min_dependents} others; "
        f"dialogs: {kinds or 'none'}; dropped: {dict(sorted(stats.dropped.items())) or 'none'}; "
        f"written to {user_path(cfg.output)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
