"""Time the whole tiny recipe on this machine: pre-training with its batch/sequence ramp, the long-context
stages with their gates, the anneal with checkpoint averaging, one after the other in one work directory.

    ./bazelw run //training:bench_tiny_recipe -- [shards=DIR] [workdir=DIR] [recipe=llama3_tiny] [key=value ...]

Without shards= it builds shards of real text with a byte-level tokenizer (Paul Graham essays, GSM8K, UDHR from
the vendored data) and pads the model's vocabulary to `vocab_size` so that the output layer costs what the
tiny BPE's would. Prints seconds and tokens/s per phase as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from tools.paths import user_path
from training import anneal, long_context, pretrain
from training.config import load_recipe


def byte_shards(root: Path) -> Path:
    from training.sample_shards import text_shards

    return text_shards(root, chars=1_500_000)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = {"shards": "", "workdir": "", "recipe": "llama3_tiny", "vocab_size": "8448"}
    overrides = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in own:
            own[key] = value
        else:
            overrides.append(arg)
    work = user_path(own["workdir"]) if own["workdir"] else Path(tempfile.mkdtemp(prefix="tiny_recipe_"))
    shards = user_path(own["shards"]) if own["shards"] else None
    if shards is None:
        shards = byte_shards(work / "shards")
        overrides.append(f"model.overrides.vocab_size={own['vocab_size']}")
    recipe = load_recipe(own["recipe"], overrides)
    times = {}
    start = time.time()
    s = pretrain.run(recipe, work / "pretrain", shards)
    times["pretrain"] = {"seconds": time.time() - start, "tokens": s["tokens"], "tokens_per_s": s["tokens_per_s"],
                         "valid_loss": s["valid_loss"]}  # fmt: skip
    start = time.time()
    s = long_context.run(recipe, work / "long_context", shards, init_from=work / "pretrain")
    times["long_context"] = {"seconds": time.time() - start, "tokens": sum(x["tokens"] for x in s["stages"]),
                             "gates": [x["gate"] for x in s["stages"]]}  # fmt: skip
    start = time.time()
    s = anneal.run(recipe, work / "anneal", shards, init_from=work / "long_context")
    times["anneal"] = {"seconds": time.time() - start, "tokens": s["tokens"], "valid_loss": s["valid_loss"],
                       "last_valid_loss": s["last_valid_loss"]}  # fmt: skip
    times["total_seconds"] = sum(v["seconds"] for v in times.values() if isinstance(v, dict))
    times["workdir"] = str(work)
    print(json.dumps(times, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
