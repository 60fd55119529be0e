"""Bytes per token per language on the UDHR (third_party/data/multilingual): the Llama 3 vocabulary, a base BPE
vocabulary trained on English web text, and that base extended with merges learned on multilingual text.

    ./bazelw run //model:bpe_report -- base_vocab=8192 extra=2048

The extension learns from the even-numbered lines of every language's UDHR and every figure is measured on the
odd-numbered lines, so no measured line was seen in training (the texts do repeat phrases across articles).
Prints a markdown table (the one in model/README.md) and, with out=FILE.json, writes the numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from model.bpe import extend_bpe, train_bpe
from model.tokenizer import Tokenizer
from tools import assets, atomic
from tools import config as config_lib
from tools.paths import user_path
from tools.tables import markdown_table


@dataclass
class BpeReportConfig:
    base_vocab: int = 8192  # total ids of the base tokenizer (ranks + 256 specials), trained on C4 English
    extra: int = 2048  # ranks added by extend_bpe on multilingual text
    out: str = ""  # optional JSON output


def bytes_per_token(tok: Tokenizer, texts: list[str]) -> float:
    return sum(len(t.encode()) for t in texts) / max(1, sum(len(tok.encode(t)) for t in texts))


def report(cfg: BpeReportConfig) -> dict:
    c4 = [r["text"] for r in assets.jsonl("web/c4_sample.jsonl")]
    rows = assets.jsonl("multilingual/udhr_lines.jsonl")
    names = {}
    for line in assets.path("multilingual/udhr/index.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        cols = line.split("\t")
        names[cols[3]] = cols[4]
    train = [r["text"] for r in rows if r["line"] % 2 == 0]
    test: dict[str, list[str]] = {}
    for r in rows:
        if r["line"] % 2 == 1:
            test.setdefault(r["lang"], []).append(r["text"])
    start = time.perf_counter()
    base = train_bpe(c4, cfg.base_vocab)
    t_train = time.perf_counter() - start
    start = time.perf_counter()
    extended = extend_bpe(base, train, cfg.extra)
    t_extend = time.perf_counter() - start
    toks = {"llama3": Tokenizer.llama3(), "base": base, "extended": extended}
    table = {lang: {k: bytes_per_token(t, texts) for k, t in toks.items()} for lang, texts in sorted(test.items())}
    return {
        "config": config_lib.to_dict(cfg),
        "vocab_sizes": {k: t.vocab_size for k, t in toks.items()},
        "seconds": {"train_base": t_train, "extend": t_extend},
        "languages": names,
        "bytes_per_token": table,
    }


def markdown(r: dict) -> str:
    v = r["vocab_sizes"]
    header = ["language", f"Llama 3 ({v['llama3']:,})", f"base ({v['base']:,}, C4 English)",
              f"base + {r['config']['extra']:,} multilingual ({v['extended']:,})", "gain"]  # fmt: skip
    rows = [[f"{r['languages'].get(lang, lang)} ({lang})", f"{row['llama3']:.2f}", f"{row['base']:.2f}",
             f"{row['extended']:.2f}", f"{row['extended'] / row['base']:.2f}x"]
            for lang, row in r["bytes_per_token"].items()]  # fmt: skip
    return markdown_table(header, rows, "lrrrr")


def main(argv: list[str] | None = None) -> dict:
    cfg = config_lib.parse(BpeReportConfig, argv)
    r = report(cfg)
    print(f"base trained in {r['seconds']['train_base']:.1f} s, extended in {r['seconds']['extend']:.1f} s")
    print(markdown(r))
    if cfg.out:
        atomic.write_json(user_path(cfg.out), r)
    return r


if __name__ == "__main__":
    main()
