"""The pipeline: config schema (one dataclass per step), step registry, Python API and the CLI.

    ./bazelw run //data:pipeline -- config=data/configs/web.yaml input=crawl/ output=out/
    ./bazelw run //data:pipeline -- --help            # every key with its default

`steps` lists the step names in order; each step's settings live under its own key (`minhash.bands=20`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from data.base import Env
from data.classify import ClassifierStepConfig, TopicConfig
from data.extract import ExtractConfig
from data.heuristics import (
    C4Config,
    DirtyWordsConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
)
from data.kl import KLConfig
from data.langid import LangIdConfig
from data.linededup import LineDedupConfig
from data.minhash import MinHashConfig
from data.mix import MixConfig, ShardsConfig
from data.pii import DomainsConfig, PiiConfig
from data.readers import ReadConfig
from data.runner import expand_inputs, identity_of, plan_tasks, prepare_output, run_pipeline
from data.steps import check_steps, make_steps
from data.tokens import TokenizeConfig
from data.urldedup import UrlDedupConfig
from tools import atomic
from tools.cluster import SlurmConfig
from tools.config import parse, save
from tools.paths import user_path


@dataclass
class ReportConfig:
    dropped_excerpt_chars: int = 160  # text kept in each dropped-document record (0: none)
    chart: bool = True  # report/funnel.png (matplotlib: about 1.5 s a run)


@dataclass
class PipelineConfig:
    input: str = MISSING  # files, folders or globs, comma-separated; hf://<name> for a hub dataset
    output: str = MISSING
    # The default needs nothing user-supplied (no block lists, classifier models or tokenizer).
    steps: list[str] = field(
        default_factory=lambda: [
            "read",
            "extract",
            "langid",
            "url_dedup",
            "pii",
            "minhash",
            "line_dedup",
            "gopher_repetition",
            "gopher_quality",
            "c4",
            "dirty_words",
            "kl",
        ]
    )
    executor: str = "local"  # inline | local (worker processes) | slurm (a submitit job array per stage)
    workers: int = 1  # local worker processes
    tasks: int = 0  # 0: one task per input file
    overwrite: bool = False  # start over when `output` holds a run with other arguments
    progress: bool = True
    write_documents: bool = True  # the final documents as Parquet under output/documents/
    slurm: SlurmConfig = field(default_factory=lambda: SlurmConfig(cpus_per_task=1))  # each array task
    report: ReportConfig = field(default_factory=ReportConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    url_dedup: UrlDedupConfig = field(default_factory=UrlDedupConfig)
    domains: DomainsConfig = field(default_factory=DomainsConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    line_dedup: LineDedupConfig = field(default_factory=LineDedupConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    topic: TopicConfig = field(default_factory=TopicConfig)
    code: ClassifierStepConfig = field(default_factory=ClassifierStepConfig)
    math: ClassifierStepConfig = field(default_factory=ClassifierStepConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    dirty_words: DirtyWordsConfig = field(default_factory=DirtyWordsConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    quality: ClassifierStepConfig = field(default_factory=ClassifierStepConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)


def tokenizer_info(tok: Any) -> dict:
    """The manifest's description of a tokenizer object (its describe() when it has one)."""
    if hasattr(tok, "describe"):
        return dict(tok.describe())
    return {
        "class": type(tok).__name__,
        "vocab_size": int(tok.vocab_size),
        "bos_id": int(tok.bos_id),
        "eos_id": int(tok.eos_id),
    }


def run(cfg: PipelineConfig, tokenizer: Any = None) -> dict:
    """Run (or resume) the pipeline of `cfg`; `tokenizer` overrides tokenize.tokenizer with an object that has
    the model.tokenizer.Tokenizer API. Returns the report summary."""
    from data.report import report_sections, write_report

    check_steps(list(cfg.steps))
    output = user_path(cfg.output)
    inputs = ",".join(p if p.strip().startswith("hf://") else str(user_path(p.strip())) for p in cfg.input.split(","))
    tasks = plan_tasks(expand_inputs(inputs, cfg.read.format), cfg.tasks)
    env = Env(
        output=output,
        work=output / "_work",
        tasks=tasks,
        cfg=cfg,
        tokenizer=tokenizer,
        extra={"cwd": str(user_path("."))},  # captured here: Slurm workers lack the caller's environment
    )
    if "tokenize" in cfg.steps:
        from data.tokens import load_tokenizer

        tok = tokenizer if tokenizer is not None else load_tokenizer(cfg.tokenize, env)
        env.extra["tokenizer_info"] = tokenizer_info(tok)
    steps = make_steps(cfg, env)  # validates every step's config before anything runs
    prepare_output(env, identity_of(cfg, tasks, env.extra.get("tokenizer_info")), cfg.overwrite)
    for step in steps:
        step.prepare_run()  # driver-side one-off work (e.g. training a classifier), cached in output/
    save(cfg, output / "config.yaml")
    result = run_pipeline(env)
    shard_totals = None
    for step in steps:
        if hasattr(step, "finish_run"):
            mix = result["global"].get("mix", [None])[0]
            shard_totals = step.finish_run(result, env.extra.get("tokenizer_info", {}), mix)
    sections = report_sections(env, steps, result, shard_totals)
    summary = write_report(output, result, sections, chart=cfg.report.chart)
    atomic.write_json(output / "logs" / "timings.json", result["timings"])
    return summary


def run_tiny(
    corpus: str | os.PathLike, output: str | os.PathLike, tokenizer: Any = None, overrides: Sequence[str] = ()
) -> dict:
    """configs/tiny.yaml over a synthetic corpus folder written by data.synthetic (its paths.yaml names the
    WARC shards, labelled sets and block list): the tiny experiment's data stage. Shards land in
    output/shards (the mix), output/anneal and output/long_context."""
    from tools.config import load
    from tools.paths import PACKAGE_ROOT

    files = [PACKAGE_ROOT / "data" / "configs" / "tiny.yaml", Path(corpus) / "paths.yaml"]
    return run(load(PipelineConfig, files, [f"output={output}", *overrides]), tokenizer=tokenizer)


def main(argv: list[str] | None = None) -> int:
    """The CLI. A bad key or value, a missing input or config file: one line on stderr, exit 2 (as the experiment
    and eval CLIs do). A disk that is full, read-only or not ours: one line naming the path, exit 1."""
    try:
        cfg = parse(PipelineConfig, sys.argv[1:] if argv is None else argv)
        summary = run(cfg)
    except (ValueError, FileNotFoundError) as e:  # tools.config.ConfigError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    report = Path(user_path(cfg.output)) / "report" / "report.md"
    print(
        f"{summary['documents_in']:,} documents in, {summary['documents_kept']:,} kept, "
        f"{summary['documents_dropped']:,} dropped; report: {report}"
    )
    if not summary["funnel_ok"]:
        print("funnel invariant violated: " + "; ".join(summary["funnel_errors"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
