"""Peak memory of the whole pipeline (configs/tiny.yaml, every step, inline) at 1x and 4x the corpus.

1x is the synthetic corpus (seed 0). 4x is four distinct corpora (seeds 0-3: their own document ids, URLs, pages
and generated text; the real text they draw on, C4, GSM8K, MATH and UDHR, overlaps, so MinHash removes part of
it, after every per-shard step before it has seen all 4x). "scale 4" is one corpus generated at scale 4 (C4 pages
beyond the sample are mixed from its paragraphs, so they are not duplicates). Each run is a fresh process; its
peak RSS is the largest of the process and its children (the extraction sandbox), measured from here. Runs
alternate between the inputs, `--repeats` times; the median and range are reported.

    ./bazelw run //data:bench_memory [-- --repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from data.synthetic import SyntheticConfig, write
from tools.paths import PACKAGE_ROOT

RUN = """
import json, sys
from pathlib import Path
from data.pipeline import PipelineConfig, run
from model.tokenizer import Tokenizer
from tools.config import load
tok = Tokenizer({bytes([i]): i for i in range(256)})  # byte-level, in the model's format
cfg = load(PipelineConfig, [Path(p) for p in sys.argv[1].split(",")], sys.argv[2:])
s = run(cfg, tokenizer=tok)
print("BENCH " + json.dumps({"docs": s["documents_in"], "kept": s["documents_kept"]}))
"""


def run(configs: list[Path], overrides: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = [sys.executable, "-c", RUN, ",".join(map(str, configs)), *overrides]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise RuntimeError(f"pipeline run failed:\n{err.read().decode(errors='replace')[-3000:]}")
        res = json.loads(out.read().decode().split("BENCH ", 1)[1])
    return {**res, "peak_rss_mb": usage.ru_maxrss / 1024}  # the process and the children it waited for


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_memory.") as tmp:
        root = Path(tmp)
        for seed in range(4):
            write(SyntheticConfig(output=str(root / f"c{seed}"), seed=seed, shards=4), root / f"c{seed}")
        write(SyntheticConfig(output=str(root / "s4"), scale=4, shards=16), root / "s4")
        configs = [PACKAGE_ROOT / "data/configs/tiny.yaml", root / "c0" / "paths.yaml"]  # labelled sets, block list
        inputs = {
            "1x (seed 0)": root / "c0" / "warc",
            "4x (seeds 0-3)": ",".join(str(root / f"c{seed}" / "warc") for seed in range(4)),
            "scale 4 (seed 0)": root / "s4" / "warc",
        }
        results: dict[str, list[dict]] = {name: [] for name in inputs}
        for r in range(args.repeats):
            names = list(inputs) if r % 2 == 0 else list(reversed(inputs))
            for name in names:
                out = root / f"out-{r}-{len(results[name])}-{names.index(name)}"
                overrides = [f"input={inputs[name]}", f"output={out}", "executor=inline", "progress=false"]
                results[name].append(run(configs, overrides))
                print(f"repeat {r + 1}: {name} {results[name][-1]['peak_rss_mb']:.0f} MB", file=sys.stderr)
    base = statistics.median(x["peak_rss_mb"] for x in results["1x (seed 0)"])
    for name, rs in results.items():
        rss = [x["peak_rss_mb"] for x in rs]
        print(
            f"{name:18s} {rs[0]['docs']:6d} documents in, {rs[0]['kept']:5d} kept; peak RSS median "
            f"{statistics.median(rss):.0f} MB (min {min(rss):.0f}, max {max(rss):.0f}); "
            f"ratio to 1x {statistics.median(rss) / base:.2f}"
        )


if __name__ == "__main__":
    main()
