"""Scorers for SFT curation (paper section 4.2.3): the judge, the topic classifier, the quality and difficulty
raters all have one interface,

    Scorer = Callable[[list[Dialog]], list[float | str]]      # one value per dialog, in order

and are chosen by name in config (`ScorerConfig.name`):

- built-in rule/keyword scorers, the CPU default (no model, deterministic, seconds per 100k dialogs). They are
  crude stand-ins for the paper's Llama 3 judges and Instag tagger, documented as such:
  `rules_quality` (float in [0, 1]), `rules_judge` (1..5), `rules_intents` (intents counted, an Instag
  stand-in), `rules_difficulty` (the 3-point rating), `keyword_topic` ("coarse/fine", e.g.
  "mathematical reasoning/geometry and trigonometry");
- `model_loglik`: the project's own model (a model.checkpoint directory, `ckpt=`): the mean log-likelihood of
  the assistant tokens, or with `labels` the label whose "Topic: <label>" continuation is most likely;
- any callable: `module:function` is imported and called as a Scorer; `register(name, factory)` adds a name.
  The reward model lives in training/, which data/ must not import (layers: data sees tools and model only), so
  the RM is one of these: e.g. `quality.reward.name=training.reward_model:score_dialogs`.
"""

from __future__ import annotations

import importlib
import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from data.dialogs import Dialog

Score = float | str
Scorer = Callable[[list[Dialog]], list[Score]]


@dataclass
class ScorerConfig:
    name: str = ""  # a registered name (SCORERS) or module:function; "" = this scorer is not used
    ckpt: str = ""  # model_loglik: a model directory (model.checkpoint format)
    labels: list[str] = field(default_factory=list)  # model_loglik: pick the likeliest label instead of a score
    max_tokens: int = 1024  # model_loglik: tokens per dialog (the start is kept)


def responses(d: Dialog) -> list[str]:
    return [m["content"] for m in d.messages if m["role"] == "assistant"]


def prompts(d: Dialog) -> list[str]:
    return [m["content"] for m in d.messages if m["role"] == "user"]


APOLOGY = re.compile(r"\b(i'?m sorry|i am sorry|i apologi[sz]e|my apologies|sorry,)", re.IGNORECASE)
REFUSAL = re.compile(r"\b(i can(no|')t (help|assist|do that)|as an ai\b)", re.IGNORECASE)
EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f\u200d]")
WORD = re.compile(r"\w+")


def rules_quality(dialogs: list[Dialog]) -> list[Score]:
    """A reward-model stand-in in [0, 1]: substantial, varied, non-apologetic, non-refusing responses score high."""
    out = []
    for d in dialogs:
        text = "\n".join(responses(d))
        words = WORD.findall(text.lower())
        length = min(1.0, math.log1p(len(words)) / math.log1p(200))  # saturates at ~200 words
        variety = len(set(words)) / len(words) if words else 0.0
        penalty = 0.3 * bool(APOLOGY.search(text)) + 0.4 * bool(REFUSAL.search(text)) + 0.1 * bool(EMOJI.search(text))
        out.append(max(0.0, 0.6 * length + 0.4 * variety - penalty))
    return out


def rules_judge(dialogs: list[Dialog]) -> list[Score]:
    """A 1..5 judge stand-in: 1 + one point per criterion met (accuracy and tone proxies): the response is
    complete (ends a sentence or a code block), is not a refusal, does not apologise, is at least 8 words."""
    out = []
    for d in dialogs:
        last = responses(d)[-1].strip()
        checks = (
            last.endswith((".", "?", "!", "```", ")")) or last[-1:].isdigit(),
            not REFUSAL.search(last),
            not APOLOGY.search(last),
            len(WORD.findall(last)) >= 8,
        )
        out.append(1 + sum(checks))
    return out


VERBS = "write|explain|list|give|describe|compute|calculate|solve|find|prove|show|summari[sz]e|translate|compare|"
VERBS += "implement|fix|debug|create|make|suggest|rewrite|name|tell|convert|derive|estimate|plot|design"
IMPERATIVE = re.compile(rf"(?:^|[.!?]\s+|\band\s+|\bthen\s+)(?:please\s+)?(?:{VERBS})\b", re.IGNORECASE)
CONSTRAINT = re.compile(r"\b(must|without|at least|at most|exactly|step by step|only|in \d+ words|format)\b", re.I)


def rules_intents(dialogs: list[Dialog]) -> list[Score]:
    """An Instag stand-in: the intents of the user turns, counted as questions plus imperative clauses (>= 1)."""
    return [float(max(1, sum(p.count("?") + len(IMPERATIVE.findall(p)) for p in prompts(d)))) for d in dialogs]


def rules_difficulty(dialogs: list[Dialog]) -> list[Score]:
    """The 3-point difficulty rating stand-in: 1 + (several intents or turns) + (constraints, code or maths)."""
    out = []
    for d, intents in zip(dialogs, rules_intents(dialogs), strict=True):
        text = "\n".join(prompts(d))
        technical = bool(CONSTRAINT.search(text)) or "```" in text or bool(re.search(r"\d\s*[-+*/^=]\s*\d", text))
        out.append(1 + (intents >= 3 or len(prompts(d)) >= 3) + technical)
    return out


# Coarse buckets and their fine topics with keywords (paper: "mathematical reasoning" and within it "geometry
# and trigonometry"); the fine topic with most keyword hits wins, none: general/other.
TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "mathematical reasoning": {
        "arithmetic": ("sum", "add", "subtract", "multiply", "divide", "how many", "total", "percent"),
        "algebra": ("equation", "solve for", "variable", "polynomial", "x =", "factor"),
        "geometry and trigonometry": ("triangle", "angle", "circle", "area", "sine", "cosine", "radius"),
        "probability and statistics": ("probability", "mean", "median", "variance", "random", "dice"),
    },
    "coding": {
        "python": ("python", "def ", "import ", "list comprehension", "pandas"),
        "web development": ("html", "css", "javascript", "react", "http"),
        "debugging": ("error", "traceback", "bug", "exception", "fix"),
        "databases": ("sql", "query", "table", "database", "index"),
    },
    "writing": {
        "creative writing": ("poem", "story", "haiku", "character", "fiction"),
        "editing": ("rewrite", "proofread", "grammar", "summarize", "summarise", "shorten"),
    },
    "science": {
        "physics": ("force", "energy", "velocity", "gravity", "quantum"),
        "chemistry": ("molecule", "reaction", "acid", "atom", "chemical"),
        "biology": ("cell", "dna", "protein", "species", "evolution"),
    },
}


def keyword_topic(dialogs: list[Dialog]) -> list[Score]:
    """ "coarse/fine" by keyword hits in the user turns (ties: the first topic in TOPICS)."""
    out = []
    for d in dialogs:
        text = "\n".join(prompts(d)).lower()
        best, hits = "general/other", 0
        for coarse, fines in TOPICS.items():
            for fine, words in fines.items():
                n = sum(text.count(w) for w in words)
                if n > hits:
                    best, hits = f"{coarse}/{fine}", n
        out.append(best)
    return out


def loglik_scorer(model, tok, labels: list[str] = (), max_tokens: int = 1024) -> Scorer:
    """The project's model as a scorer: mean log-probability of the assistant tokens (model.dialog's SFT loss
    mask), or with `labels` the label with the highest log-likelihood as the continuation "Topic: <label>" of the
    dialog (a zero-shot classifier)."""
    import torch

    from model.dialog import encode_dialog

    @torch.no_grad()
    def logprobs(ids: list[int]) -> torch.Tensor:
        x = torch.tensor([ids])
        return torch.log_softmax(model(x[:, :-1]).float(), -1)[0].gather(1, x[0, 1:, None])[:, 0]

    def label_loglik(ids: list[int], label: str) -> float:
        tail = tok.encode(f"Topic: {label}")
        return float(logprobs(ids + tail)[-len(tail) :].sum())

    def score(dialogs: list[Dialog]) -> list[Score]:
        out: list[Score] = []
        for d in dialogs:
            ids, mask = encode_dialog(tok, d.messages)
            ids, mask = ids[:max_tokens], mask[:max_tokens]
            if not labels:
                lp, m = logprobs(ids), torch.tensor(mask[1:])
                out.append(float(lp[m].mean()) if m.any() else float("-inf"))
                continue
            out.append(max(labels, key=lambda label: label_loglik(ids, label)))
        return out

    return score


def _model_loglik(cfg: ScorerConfig) -> Scorer:
    from model.checkpoint import load_model
    from tools.paths import user_path

    if not cfg.ckpt:
        raise ValueError("scorer model_loglik needs ckpt= (a model directory)")
    model, tok = load_model(user_path(cfg.ckpt))
    return loglik_scorer(model.eval(), tok, list(cfg.labels), cfg.max_tokens)


# name -> factory(ScorerConfig) -> Scorer
SCORERS: dict[str, Callable[[ScorerConfig], Scorer]] = {
    "rules_quality": lambda cfg: rules_quality,
    "rules_judge": lambda cfg: rules_judge,
    "rules_intents": lambda cfg: rules_intents,
    "rules_difficulty": lambda cfg: rules_difficulty,
    "keyword_topic": lambda cfg: keyword_topic,
    "model_loglik": _model_loglik,
}


def register(name: str, factory: Callable[[ScorerConfig], Scorer]) -> None:
    """Make `name` usable in config (e.g. a reward model wrapped by the caller, who may import training/)."""
    SCORERS[name] = factory


def make_scorer(cfg: ScorerConfig) -> Scorer:
    """The scorer `cfg.name` names: registered, or `module:function` (imported, used as the Scorer)."""
    if cfg.name in SCORERS:
        return SCORERS[cfg.name](cfg)
    if ":" in cfg.name:
        module, _, attr = cfg.name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"scorer '{cfg.name}' cannot be loaded: {e}") from None
        if not callable(fn):
            raise ValueError(f"scorer '{cfg.name}' is not callable")
        return fn
    raise ValueError(f"unknown scorer '{cfg.name}' (known: {', '.join(sorted(SCORERS))}, or module:function)")


def run_scorer(scorer: Scorer, dialogs: list[Dialog], name: str, kind: type) -> list:
    """Call `scorer` and check it returned one value of `kind` (float or str) per dialog."""
    values = list(scorer(dialogs)) if dialogs else []
    if len(values) != len(dialogs):
        raise ValueError(f"scorer '{name}' returned {len(values)} values for {len(dialogs)} dialogs")
    if kind is float:
        bad = [v for v in values if not isinstance(v, numbers.Real)]
        if bad:
            raise ValueError(f"scorer '{name}' must return numbers here, got {bad[0]!r:.40}")
        return [float(v) for v in values]
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise ValueError(f"scorer '{name}' must return strings here, got {bad[0]!r:.40}")
    return values
