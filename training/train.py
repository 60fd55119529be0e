"""Run one phase of a recipe from the command line (also under torchrun for several processes).

    python -m training.train recipe=llama3_tiny phase=pretrain workdir=W shards=S [init_from=P] [key=value ...]
    torchrun --nproc_per_node 2 -m training.train recipe=... phase=pretrain ...

phase: pretrain | long_context | anneal | probe. Other key=value arguments override the recipe
(e.g. pretrain.tokens=200000 monitor.wandb=false). Prints the phase's summary as JSON.
"""

from __future__ import annotations

import json
import sys

from tools.paths import user_path
from training import anneal, long_context, pretrain
from training.config import load_recipe

PHASES = {"pretrain": pretrain.run, "long_context": long_context.run, "anneal": anneal.run, "probe": anneal.probe}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    own = {"recipe": "llama3_tiny", "phase": "pretrain", "workdir": "", "shards": "", "init_from": ""}
    overrides = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"argument '{arg}' is not of the form key=value")
        if key in own:
            own[key] = value
        else:
            overrides.append(arg)
    if own["phase"] not in PHASES:
        raise SystemExit(f"phase must be one of {', '.join(PHASES)}, got '{own['phase']}'")
    for key in ("workdir", "shards"):
        if not own[key]:
            raise SystemExit(f"{key}= is required")
    recipe = load_recipe(own["recipe"], overrides)
    kwargs = {"init_from": user_path(own["init_from"])} if own["init_from"] else {}
    if own["phase"] in ("long_context", "anneal", "probe") and not kwargs:
        raise SystemExit(f"phase {own['phase']} needs init_from= (the previous phase's workdir)")
    summary = PHASES[own["phase"]](recipe, user_path(own["workdir"]), user_path(own["shards"]), **kwargs)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
