"""The registry of pipeline steps: name -> Step class, the checks on a step list, and the segments a list is cut
into. The runner builds a run's steps from here; the config schema (data/pipeline.py) has one field per name."""

from __future__ import annotations

import difflib

from data.base import Env, GlobalStep, Step, cut_segments
from data.classify import CodeScore, MathScore, Quality, Topic
from data.extract import Extract
from data.heuristics import C4Filter, DirtyWords, GopherQuality, GopherRepetition
from data.kl import KLOutliers
from data.langid import LangId
from data.linededup import LineDedup
from data.minhash import MinHashDedup
from data.mix import Mix, WriteShards
from data.pii import Domains, Pii
from data.readers import Reader
from data.tokens import Tokenize
from data.urldedup import UrlDedup

STEPS = {
    cls.name: cls
    for cls in (
        Reader,
        Extract,
        LangId,
        UrlDedup,
        Domains,
        Pii,
        LineDedup,
        MinHashDedup,
        Topic,
        CodeScore,
        MathScore,
        GopherRepetition,
        GopherQuality,
        C4Filter,
        DirtyWords,
        KLOutliers,
        Quality,
        Tokenize,
        Mix,
        WriteShards,
    )
}


def check_steps(names: list[str]) -> None:
    for name in names:
        if name not in STEPS:
            close = difflib.get_close_matches(name, list(STEPS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown step '{name}' in steps{hint}; steps are {sorted(STEPS)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"steps lists {dup} more than once")
    if not names or names[0] != "read":
        raise ValueError("steps must begin with 'read'")
    order = {n: i for i, n in enumerate(names)}
    for later, earlier in (("mix", "tokenize"), ("shards", "mix")):
        if later in order and order.get(earlier, len(names)) > order[later]:
            raise ValueError(f"step '{later}' needs '{earlier}' before it")


def make_steps(cfg, env: Env) -> list[Step]:
    """The steps of a pipeline config (data.pipeline.PipelineConfig: one config field per step name)."""
    check_steps(list(cfg.steps))
    return [STEPS[name](getattr(cfg, name), env) for name in cfg.steps]


def segment_names(names: list[str]) -> list[list[str]]:
    """The segments of a list of step names, as the runner cuts the steps (one job array each on Slurm)."""
    return cut_segments(list(names), lambda name: issubclass(STEPS[name], GlobalStep))
