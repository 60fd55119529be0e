"""The data-side stages shared by the CPU-scale experiments (llama3_tiny, scaling_sweep, anneal_probe):

    curate      the synthetic web corpus (+ any real sources) through the curation steps of
                data/configs/tiny.yaml -> curated documents, the funnel report, planted-defect fates
    tokenizer   a byte-level BPE in the Llama 3 format trained on the curated documents
    shards      the curated documents tokenized, mixed (pre-training mix, annealing mix, long documents)
                and written as data.shards sets, the tokenizer beside them

Each is a dag stage function `fn(ctx)` returning its typed record (experiments/records.py: CurateRecord,
TokenizerRecord, ShardsRecord), which the dag stores as the stage's result.json; the experiment's config holds
`data: CorpusConfig` and `tokenizer: TokenizerConfig`.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data.document import read_documents
from data.pipeline import PipelineConfig
from data.pipeline import run as run_pipeline
from data.synthetic import SyntheticConfig, load_truth
from data.synthetic import write as write_synthetic
from experiments.dag import StageContext
from experiments.records import CategoryTotals, CurateRecord, PlantedFates, ShardsRecord, TokenizerRecord
from tools import assets
from tools.config import load
from tools.paths import PACKAGE_ROOT

TINY_PIPELINE = PACKAGE_ROOT / "data" / "configs" / "tiny.yaml"
MIX_STEPS = ["tokenize", "mix", "shards"]  # what the shards stage runs after reading curated documents


@dataclass
class CorpusConfig:
    seed: int = 0  # of the synthetic corpus
    scale: float = 1.0  # multiplies the number of synthetic documents of every kind
    passkey_words: int = 2500  # haystack length of the synthetic passkey documents
    # Real inputs curated with the synthetic corpus (WARC/WET/JSONL/Parquet files or folders); a path that
    # starts with "assets:" is the project's vendored data, e.g. assets:web/c4_sample.jsonl.
    sources: list[str] = field(default_factory=list)
    pipeline: list[str] = field(default_factory=list)  # key=value overrides of data/configs/tiny.yaml
    workers: int = 2


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096  # ranks + the 256 Llama 3 special tokens
    max_chars: int = 4_000_000  # of curated text to train on


def source_path(spec: str) -> str:
    return str(assets.resolve(spec))


def _tiny_steps() -> list[str]:
    return list(yaml.safe_load(TINY_PIPELINE.read_text())["steps"])


def planted_fates(corpus: Path, curated: Path) -> PlantedFates:
    """What the curation did to the synthetic corpus's ground truth: planted junk caught by the step meant to
    catch it (per kind), duplicate groups left with exactly one survivor, and documents meant to stay kept."""
    truth = load_truth(corpus)
    dropped = {}
    for f in sorted((curated / "dropped").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            dropped[rec["id"]] = rec["step"]
    planted, caught, groups = Counter(), Counter(), {}
    for t in truth.values():
        if t["expect"] == "dropped":
            planted[t["kind"]] += 1
            caught[t["kind"]] += dropped.get(t["id"]) in t["steps"]
        elif t["expect"] == "one_of_group":
            groups.setdefault(t["group"], []).append(t["id"] not in dropped)
    keep = [t for t in truth.values() if t["expect"] == "kept"]
    return PlantedFates(
        junk_planted=dict(sorted(planted.items())),
        junk_caught=dict(sorted(caught.items())),
        junk_caught_fraction=sum(caught.values()) / max(1, sum(planted.values())),
        duplicate_groups=len(groups),
        duplicate_groups_with_one_survivor=sum(sum(g) == 1 for g in groups.values()),
        keep_documents=len(keep),
        keep_kept_fraction=sum(t["id"] not in dropped for t in keep) / max(1, len(keep)),
    )


def curate(ctx: StageContext) -> CurateRecord:
    cfg: CorpusConfig = ctx.config.data
    corpus = ctx.workdir / "corpus"
    if not (corpus / "paths.yaml").is_file():  # the generator is deterministic; a rerun after a kill redoes it
        write_synthetic(
            SyntheticConfig(output=str(corpus), seed=cfg.seed, scale=cfg.scale, passkey_words=cfg.passkey_words), corpus
        )
    synthetic_input = json.loads((corpus / "paths.yaml").read_text())["input"]
    inputs = [synthetic_input, *(source_path(s) for s in cfg.sources)]
    steps = [s for s in _tiny_steps() if s not in MIX_STEPS]
    overrides = [
        f"output={ctx.workdir / 'curated'}",
        f"input={','.join(inputs)}",
        f"steps=[{','.join(steps)}]",
        f"workers={cfg.workers}",
        "progress=false",
        *cfg.pipeline,
    ]
    pcfg = load(PipelineConfig, [TINY_PIPELINE, corpus / "paths.yaml"], overrides)
    summary = run_pipeline(pcfg)
    if not summary["funnel_ok"]:
        raise RuntimeError("data funnel invariant violated: " + "; ".join(summary["funnel_errors"]))
    return CurateRecord(
        documents_in=summary["documents_in"],
        documents_kept=summary["documents_kept"],
        documents_dropped=summary["documents_dropped"],
        planted=planted_fates(corpus, ctx.workdir / "curated"),
    )


def curated_texts(curated: Path, max_chars: int) -> list[str]:
    texts, total = [], 0
    for f in sorted((curated / "documents").glob("*.parquet")):
        for doc in read_documents(f, columns=["id", "text"]):
            texts.append(doc.text)
            total += len(doc.text)
            if total >= max_chars:
                return texts
    return texts


def tokenizer(ctx: StageContext) -> TokenizerRecord:
    from model.bpe import train_bpe

    cfg: TokenizerConfig = ctx.config.tokenizer
    texts = curated_texts(ctx.input("curate") / "curated", cfg.max_chars)
    tok = train_bpe(texts, cfg.vocab_size)
    tok.save(ctx.workdir / "tokenizer")
    sample = "\n".join(texts[:200])
    return TokenizerRecord(
        vocab_size=tok.vocab_size,
        training_chars=sum(map(len, texts)),
        bytes_per_token=len(sample.encode()) / max(1, len(tok.encode(sample))),
    )


def shards(ctx: StageContext) -> ShardsRecord:
    from model.tokenizer import Tokenizer

    cfg: CorpusConfig = ctx.config.data
    tok_dir = ctx.input("tokenizer") / "tokenizer"
    tok = Tokenizer.load(tok_dir)
    out = ctx.workdir / "out"
    overrides = [
        f"output={out}",
        f"input={ctx.input('curate') / 'curated' / 'documents'}",
        "read.format=documents",
        f"steps=[read,{','.join(MIX_STEPS)}]",
        f"workers={cfg.workers}",
        "progress=false",
        *cfg.pipeline,
    ]
    summary = run_pipeline(load(PipelineConfig, [TINY_PIPELINE], overrides), tokenizer=tok)
    for name in ("shards", "anneal", "long_context"):  # training finds the tokenizer beside the shards
        if (out / name / "manifest.json").is_file() and not (out / name / "tokenizer").exists():
            shutil.copytree(tok_dir, out / name / "tokenizer")
    totals = json.loads((out / "shards" / "manifest.json").read_text())["totals"]
    by_category = {c: CategoryTotals(v["documents"], v["tokens"]) for c, v in totals["by_category"].items()}
    return ShardsRecord(documents=summary["documents_kept"], tokens=totals["tokens"], by_category=by_category)


def shard_dirs(ctx: StageContext) -> dict[str, Path]:
    """The shard sets written by the shards stage, for stages that take it as input."""
    out = ctx.input("shards") / "out"
    return {
        name: out / name for name in ("shards", "anneal", "long_context") if (out / name / "manifest.json").is_file()
    }
