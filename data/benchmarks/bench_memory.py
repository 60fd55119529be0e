"""Peak memory of the whole pipeline (configs/tiny.yaml, every step) at 1x and 4x the corpus: the synthetic
corpus, and the same shard files four times over (new names) for 4x. Each run is a fresh process; peak RSS is
the largest of the process and its children (the extraction sandbox).

    ./bazelw run //data:bench_memory
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from data.synthetic import SyntheticConfig, write
from tools.paths import PACKAGE_ROOT

RUN = """
import json, resource, sys
from pathlib import Path
from data.pipeline import PipelineConfig, run
from model.tokenizer import Tokenizer
from tools.config import load
tok = Tokenizer({bytes([i]): i for i in range(256)})  # byte-level, in the model's format
cfg = load(PipelineConfig, [Path(p) for p in sys.argv[1].split(",")], sys.argv[2:])
s = run(cfg, tokenizer=tok)
rss = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
print("BENCH " + json.dumps({"docs": s["documents_in"], "kept": s["documents_kept"], "peak_rss_mb": rss}))
"""


def run(configs: list[Path], overrides: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = [sys.executable, "-c", RUN, ",".join(map(str, configs)), *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.split("BENCH ", 1)[1])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_memory.") as tmp:
        root = Path(tmp)
        write(SyntheticConfig(output=str(root / "c"), shards=4), root / "c")
        x4 = root / "x4"
        x4.mkdir()
        for k in range(4):
            for f in sorted((root / "c" / "warc").glob("*.warc.gz")):
                os.symlink(f, x4 / f"copy{k}-{f.name}")
        configs = [PACKAGE_ROOT / "data/configs/tiny.yaml", root / "c" / "paths.yaml"]
        common = ["executor=inline", "progress=false"]
        one = run(configs, [f"output={root / 'o1'}", *common])
        four = run(configs, [f"output={root / 'o4'}", f"input={x4}", *common])
    print(f"1x: {one['docs']} documents, peak RSS {one['peak_rss_mb']:.0f} MB")
    print(f"4x: {four['docs']} documents, peak RSS {four['peak_rss_mb']:.0f} MB")
    print(f"ratio 4x / 1x: {four['peak_rss_mb'] / one['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
