"""Long-context SFT data (data/posttrain/long_context.py): chunks of the real essays, QA answers found in their
chunk, hierarchical summary levels, the import graph (a small tree with known fan-in, and this repository), the code
task's removed file, the 0.1% mix, and bad input counted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from data.dialogs import Dialog, read_dialogs
from data.posttrain.long_context import (
    CHAT_TOKENS,
    QA_PROMPT,
    SUMMARY_PROMPT,
    ExtractiveQA,
    LongContextConfig,
    approx_tokens,
    build,
    chunk,
    code_dialog,
    code_dialogs,
    document_dialogs,
    extractive_summary,
    main,
    mix_count,
    mix_sample,
    parse_qa,
    read_repository,
    sentences,
    summarize,
    token_counter,
)
from tools import assets
from tools.paths import PACKAGE_ROOT

ESSAYS = "niah/paul_graham_essays"


def essays() -> list[tuple[str, str]]:
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(assets.path(ESSAYS).glob("*.txt"))]


def squash(text: str) -> str:
    return " ".join(text.split())


def test_real_essays_are_cut_into_full_chunks_with_the_llama3_tokenizer():
    count = token_counter("llama3")
    for name in ("worked.txt", "popular.txt", "gap.txt"):
        text = (assets.path(ESSAYS) / name).read_text(encoding="utf-8")
        for size in (1024, 4096):
            chunks = chunk(text, size, count)
            assert "".join(chunks) == text
            lengths = [count(c) for c in chunks]
            assert max(lengths) <= size, (name, size, lengths)
            # Cut between words, each chunk as full as the next word allows.
            assert min(lengths[:-1], default=size) >= size - 32, (name, size, lengths)
            assert len(chunks) in (math.ceil(count(text) / size), math.ceil(count(text) / size) + 1)
    # A word longer than a chunk is cut between characters.
    assert chunk("x" * 100, 10, approx_tokens) == ["x" * 40, "x" * 40, "x" * 20]
    assert chunk("ab cd", 1, approx_tokens) == ["ab", " cd"] and chunk("", 8, approx_tokens) == []


def test_documents_shorter_than_one_chunk_are_dropped_and_the_rest_counted():
    docs = essays()
    cfg = LongContextConfig(chunk_tokens=8192, repository="")
    dialogs, stats = document_dialogs(docs, cfg, approx_tokens, ExtractiveQA(), extractive_summary)
    long = [name for name, text in docs if approx_tokens(text) >= 8192]
    assert sorted(long) == ["popular.txt", "worked.txt"]  # the essays are short: two reach 8K tokens
    assert stats.documents_kept == 2 and stats.dropped["document: shorter than one chunk"] == len(docs) - 2
    assert stats.chunks == sum(len(chunk(t, 8192, approx_tokens)) for n, t in docs if n in long)
    assert (
        sorted(d.source for d in dialogs)
        == ["long_context/qa"] * 2 + ["long_context/summary"] * 2 + ["long_context/summary_qa"] * 2
    )


def test_qa_answers_are_in_their_chunk_and_the_dialog_holds_the_whole_document():
    qa = ExtractiveQA(seed=3)
    asked = 0
    for _, text in essays():
        for piece in chunk(text, 1024, approx_tokens):
            pair = parse_qa(qa(QA_PROMPT.format(text=piece)))
            if pair is None:
                continue
            question, answer = pair
            asked += 1
            assert answer in piece
            blanked = question.split('"', 1)[1].rstrip('"')
            assert "____" in blanked and squash(blanked.replace("____", answer, 1)) in squash(piece)
    assert asked >= 150  # nearly every chunk of the 644 KB of essays yields a question
    text = (assets.path(ESSAYS) / "worked.txt").read_text(encoding="utf-8")
    cfg = LongContextConfig(chunk_tokens=2048, qa_per_document=3, repository="")
    dialogs, _ = document_dialogs([("worked", text)], cfg, approx_tokens, ExtractiveQA(), extractive_summary)
    qas = [d for d in dialogs if d.source == "long_context/qa"]
    assert len(qas) == 3 and len({d.messages[-1]["content"] for d in qas}) == 3
    for d in qas:
        assert text in d.messages[0]["content"] and d.messages[-1]["content"] in text
    # Deterministic with the seed.
    assert document_dialogs([("worked", text)], cfg, approx_tokens, ExtractiveQA(), extractive_summary)[0] == dialogs


def test_hierarchical_summaries_summarise_chunks_then_summaries():
    text = (assets.path(ESSAYS) / "worked.txt").read_text(encoding="utf-8")
    chunks = chunk(text, 512, approx_tokens)
    prompts = []

    def recording(prompt: str) -> str:
        prompts.append(prompt)
        return extractive_summary(prompt)

    levels = summarize(chunks, recording, fanout=4)
    sizes = [len(level) for level in levels]
    assert sizes[0] == len(chunks) == 37 and sizes == [37, 10, 3, 1]
    assert len(prompts) == sum(sizes)
    assert prompts[0] == SUMMARY_PROMPT.format(text=chunks[0])
    for summary, piece in zip(levels[0], chunks):  # extractive: every sentence of a chunk's summary is in the chunk
        assert all(s in sentences(piece) for s in sentences(summary))
    for level, below in zip(levels[1:], levels):  # each summary of summaries draws on the summaries below it only
        for i, summary in enumerate(level):
            group = sentences(" ".join(below[4 * i : 4 * i + 4]))
            assert all(s in group for s in sentences(summary))
    assert summarize(chunks[:1], extractive_summary, 4) == [[extractive_summary(SUMMARY_PROMPT.format(text=chunks[0]))]]


def test_a_model_drops_in_and_its_bad_replies_are_counted():
    text = (assets.path(ESSAYS) / "worked.txt").read_text(encoding="utf-8")
    cfg = LongContextConfig(chunk_tokens=4096, repository="")
    dialogs, stats = document_dialogs(
        [("worked", text)], cfg, approx_tokens, qa=lambda p: "I cannot help with that.", summarize_fn=lambda p: "Short."
    )
    assert [d.source for d in dialogs] == ["long_context/summary"] and dialogs[0].messages[-1]["content"] == "Short."
    assert stats.dropped == {
        "qa: no question and answer in the reply": 1,
        "summary_qa: no question and answer in the reply": 1,
    }
    assert parse_qa("Question: Who wrote it?\nAnswer: Paul Graham.") == ("Who wrote it?", "Paul Graham.")


def tree(root: Path) -> Path:
    """A small package whose import fan-in is known: pkg/core.py is imported by 7 files in 7 styles, pkg/util.py
    by 2, and two files cannot be read."""
    files = {
        "pkg/__init__.py": "",
        "pkg/core.py": "VALUE = 1\n\n\ndef helper():\n    return VALUE\n",
        "pkg/util.py": "import os\n\nfrom pkg.core import VALUE\n\nBASE = os.sep + str(VALUE)\n",
        "pkg/a.py": "import pkg.core\n",
        "pkg/b.py": "from pkg import core\nfrom pkg import util\n",
        "pkg/c.py": "from . import core as c\n",
        "pkg/sub/__init__.py": "from ..core import helper\n",
        "pkg/sub/d.py": "def f():\n    from pkg.core import helper  # lazy\n    return helper()\n",
        "app.py": "import pkg.core as k\nimport pkg.util\nimport numpy\n",
        "pkg/self.py": "import pkg.self\n",  # a self-import is no edge
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "pkg" / "latin1.py").write_bytes(b"# caf\xe9\nfrom pkg import core\n")
    (root / "pkg" / "broken.py").write_text("from pkg import core\ndef (:\n", encoding="utf-8")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.py").write_text("import pkg.core\n", encoding="utf-8")
    return root


def test_import_graph_of_a_small_tree_has_the_known_fan_in(tmp_path):
    repo = read_repository(tree(tmp_path))
    assert repo.dropped == {"python file: not UTF-8": 1, "python file: does not parse": 1}
    deps = repo.dependents()
    assert deps["pkg/core.py"] == {
        "pkg/util.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/sub/__init__.py", "pkg/sub/d.py", "app.py"
    }  # fmt: skip
    assert deps["pkg/util.py"] == {"pkg/b.py", "app.py"}
    assert repo.imports["pkg/self.py"] == set() and repo.imports["app.py"] == {"pkg/core.py", "pkg/util.py"}
    assert repo.key_files(5) == ["pkg/core.py"] and repo.key_files(2) == ["pkg/core.py", "pkg/util.py"]
    assert repo.key_files(8) == []


@pytest.fixture(scope="module")
def this_repo():
    return read_repository(PACKAGE_ROOT)


def test_import_graph_of_this_repository(this_repo):
    repo = this_repo
    assert not repo.dropped and len(repo.files) > 200
    keys = repo.key_files(5)
    assert {"tools/atomic.py", "tools/assets.py", "tools/config.py", "data/dialogs.py"} <= set(keys)
    deps = repo.dependents()
    assert {"data/dialogs.py", "data/posttrain/long_context.py", "model/tokenizer.py"} <= deps["tools/atomic.py"]
    assert {"data/dialogs.py", "tools/assets.py", "tools/atomic.py"} <= repo.imports["data/posttrain/long_context.py"]
    assert all(len(deps[k]) >= 5 for k in keys)


def test_the_code_dialog_removes_the_file_and_asks_for_it(tmp_path):
    repo = read_repository(tree(tmp_path))
    cfg = LongContextConfig(min_dependents=5, code_tokens=4096)
    dialogs, stats = code_dialogs(repo, cfg, approx_tokens)
    assert stats.key_files == 1 and stats.import_edges == sum(len(v) for v in repo.imports.values())
    assert stats.python_files == 12 and len(dialogs) == 1
    prompt, answer = dialogs[0].messages[0]["content"], dialogs[0].messages[1]["content"]
    core = repo.files["pkg/core.py"]
    assert "### pkg/core.py" not in prompt and core not in prompt and "### pkg/util.py" in prompt
    assert f"```python\n{core}\n```" in answer
    assert "pkg/a.py, pkg/b.py, pkg/c.py, pkg/sub/__init__.py, pkg/sub/d.py, pkg/util.py" in answer
    # The budget holds the whole dialog; dependents are packed first (a file that does not fit is skipped), then the
    # other files while they fit, and the answer names the dependents shown.
    small = code_dialog(repo, "pkg/core.py", 211, 5, approx_tokens)
    assert isinstance(small, Dialog)
    assert CHAT_TOKENS + sum(approx_tokens(m["content"]) for m in small.messages) <= 211
    shown = [line[4:] for line in small.messages[0]["content"].splitlines() if line.startswith("### ")]
    assert shown == [
        "app.py",
        "pkg/__init__.py",
        "pkg/a.py",
        "pkg/b.py",
        "pkg/c.py",
        "pkg/sub/__init__.py",
        "pkg/sub/d.py",
    ]
    assert "pkg/sub/d.py.\n" in small.messages[1]["content"] and "pkg/util.py" not in small.messages[1]["content"]
    assert code_dialog(repo, "pkg/core.py", 100, 5, approx_tokens) == "its dependents do not fit the budget"
    assert code_dialog(repo, "pkg/core.py", 20, 5, approx_tokens) == "file longer than the budget"


def test_code_dialogs_of_this_repository_are_seeded(this_repo):
    repo = this_repo
    cfg = LongContextConfig(code_dialogs=3, code_tokens=16_384)
    first, _ = code_dialogs(repo, cfg, approx_tokens)
    assert code_dialogs(repo, cfg, approx_tokens)[0] == first
    other, _ = code_dialogs(repo, LongContextConfig(code_dialogs=3, code_tokens=16_384, seed=1), approx_tokens)
    assert [d.messages[1]["content"] for d in other] != [d.messages[1]["content"] for d in first]
    for d in first:
        path = d.messages[1]["content"].split("\n\n", 1)[1].split(":\n", 1)[0]
        assert repo.files[path] in d.messages[1]["content"] and f"### {path}\n" not in d.messages[0]["content"]
        assert CHAT_TOKENS + sum(approx_tokens(m["content"]) for m in d.messages) <= 16_384


def test_mix_count_gives_at_least_the_share():
    assert mix_count(0) == 0 and mix_count(999) == 1 and mix_count(1000) == 2 and mix_count(100_000) == 101
    for share in (0.001, 0.01, 0.2):
        for n in range(0, 20_000, 97):
            k = mix_count(n, share)
            assert k / (n + k) >= share if n else k == 0
            assert k == 0 or (k - 1) / (n + k - 1) < share  # the fewest that reach it
    with pytest.raises(ValueError, match="share"):
        mix_count(10, 1.0)
    dialogs = [Dialog([{"role": "user", "content": str(i)}, {"role": "assistant", "content": "x"}]) for i in range(50)]
    picked = mix_sample(dialogs, 9_999, 0.001, seed=0)
    assert len(picked) == 11 and picked == mix_sample(dialogs, 9_999, 0.001, seed=0)  # 10 would be 0.0999%
    assert picked != mix_sample(dialogs, 9_999, 0.001, seed=1)
    assert [dialogs.index(d) for d in picked] == sorted(dialogs.index(d) for d in picked)
    assert len(mix_sample(dialogs, 10**6)) == 50  # fewer than needed: all of them


def test_bad_documents_are_counted_and_the_cli_writes_dialogs_and_stats(tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "empty.txt").write_text("  \n", encoding="utf-8")
    (docs / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 500)
    (docs / "short.txt").write_text("Too short to fill one chunk.", encoding="utf-8")
    (docs / "worked.txt").write_text((assets.path(ESSAYS) / "worked.txt").read_text(encoding="utf-8"))
    out = tmp_path / "out"
    args = [f"documents={docs}", f"repository={tree(tmp_path / 'repo')}", f"output={out}", "chunk_tokens=1024"]
    assert main(args) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["documents_in"] == 4 and stats["documents_kept"] == 1
    assert stats["dropped"] == {
        "document: empty": 1,
        "document: not UTF-8": 1,
        "document: shorter than one chunk": 1,
        "python file: does not parse": 1,
        "python file: not UTF-8": 1,
    }
    assert stats["documents_in"] == stats["documents_kept"] + sum(
        n for k, n in stats["dropped"].items() if k.startswith("document:")
    )
    assert stats["dialogs"] == {
        "long_context/code": 1, "long_context/qa": 1, "long_context/summary": 1, "long_context/summary_qa": 1
    }  # fmt: skip
    assert stats["lengths"] == {"<=16K": 1, "<=32K": 3}  # worked.txt is ~18.7K tokens
    records = read_dialogs(out / "dialogs.jsonl").records
    assert [d.source for d in records] == sorted(stats["dialogs"])[1:] + ["long_context/code"]
    written = (out / "dialogs.jsonl").read_bytes()
    assert main(args) == 0 and (out / "dialogs.jsonl").read_bytes() == written  # deterministic
    assert "1 kept (19 chunks)" in capsys.readouterr().out
    assert main([*args, "chunk_tokns=5"]) == 2 and "did you mean 'chunk_tokens'" in capsys.readouterr().err
    assert main([*args, f"documents={tmp_path / 'missing'}"]) == 2
    assert main([*args, "summary_fanout=1"]) == 2 and "summary_fanout must be >= 2" in capsys.readouterr().err
    assert build(LongContextConfig(documents=str(docs), repository="", chunk_tokens=10**6))[1].documents_kept == 0
