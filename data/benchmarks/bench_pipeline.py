"""End to end against datatrove: the same pipeline shape (extraction, Gopher repetition and quality, C4, language
filter, MinHash dedup) over the same input, one core each, side by side; documents per second per core and the
agreement of the kept sets. Input: the vendored WARCs, the vendored C4 sample (JSONL) and the synthetic corpus's
WARCs (generated here, deterministic).

datatrove runs from a separate venv (never the project's):

    python3 -m venv /tmp/dtvenv && /tmp/dtvenv/bin/pip install "datatrove[processing]" resiliparse \\
        fasttext-numpy2-wheel faust-cchardet python-magic
    ./bazelw run //data:bench_pipeline -- --peer-python /tmp/dtvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from data.document import read_documents
from data.langid import lid176_path
from data.synthetic import SyntheticConfig, write
from tools import assets
from tools.paths import PACKAGE_ROOT

OURS = """
import json, resource, sys, time
from data.pipeline import main
t = time.time()
main(sys.argv[1:])
cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
          for f in ("ru_utime", "ru_stime"))
rss = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
print("BENCH " + json.dumps({"cpu_s": cpu, "wall_s": time.time() - t, "peak_rss_mb": rss}))
"""


def prepare(root: Path, scale: float) -> tuple[Path, Path]:
    warc, jsonl = root / "warc", root / "jsonl"
    warc.mkdir(parents=True)
    jsonl.mkdir()
    web = assets.path("web")
    for name in ("dolma-sample-0000.warc.gz", "dolma-sample-0001.warc.gz", "resiliparse-warcfile.warc.gz"):
        os.symlink(web / name, warc / name)
    os.symlink(web / "c4_sample.jsonl", jsonl / "c4_sample.jsonl")
    write(SyntheticConfig(output=str(root / "syn"), scale=scale, shards=4), root / "syn")
    for f in sorted((root / "syn" / "warc").glob("*.warc.gz")):
        os.symlink(f, warc / f"synthetic-{f.name}")
    return warc, jsonl


def key(doc_id: str) -> str:
    """One id per document on both sides (datatrove keeps <> around WARC ids and names JSONL lines file/n)."""
    return doc_id.strip("<>").replace("c4_sample.jsonl/", "c4_sample.jsonl#")


def run_ours(warc: Path, jsonl: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    args = [
        f"config={PACKAGE_ROOT / 'data/configs/filter.yaml'}",
        f"input={warc},{jsonl}",
        f"output={out}",
        "executor=inline",
        "progress=false",
    ]
    proc = subprocess.run([sys.executable, "-c", OURS, *args], env=env, capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.split("BENCH ", 1)[1])
    summary = json.loads((out / "report" / "summary.json").read_text())
    res["docs_in"] = summary["documents_in"]
    res["kept"] = [d.id for f in sorted((out / "documents").glob("*.parquet")) for d in read_documents(f, ["id"])]
    minhash_dups = []
    for f in (out / "dropped").glob("*.jsonl"):
        minhash_dups += [r["id"] for r in map(json.loads, f.read_text().splitlines()) if r["step"] == "minhash"]
    res["filtered"] = res["kept"] + minhash_dups  # what reached MinHash
    res["steps_seconds"] = json.loads((out / "logs" / "timings.json").read_text())[
        "steps (seconds in each step, summed over tasks)"
    ]
    return res


def run_peer(python: str, warc: Path, jsonl: Path, work: Path) -> dict:
    script = Path(__file__).with_name("datatrove_peer.py")
    cmd = [python, str(script), str(warc), str(jsonl), str(work), str(lid176_path())]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"datatrove side failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer-python", default="/tmp/dtvenv/bin/python")
    ap.add_argument("--scale", type=float, default=1.0, help="size of the synthetic part of the input")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_pipeline.") as tmp:
        root = Path(tmp)
        warc, jsonl = prepare(root, args.scale)
        ours = run_ours(warc, jsonl, root / "ours")
        peer = run_peer(args.peer_python, warc, jsonl, root / "peer")
    docs = ours["docs_in"]
    print(f"input: {docs} documents (vendored WARCs + C4 sample + synthetic WARCs at scale {args.scale})")
    print(f"{'':10s} {'kept':>6s} {'CPU s':>8s} {'wall s':>8s} {'docs/s/core':>12s} {'peak RSS MB':>12s}")
    for name, r in (("herd", ours), ("datatrove", peer)):
        rate = docs / r["cpu_s"]
        print(
            f"{name:10s} {len(r['kept']):6d} {r['cpu_s']:8.1f} {r['wall_s']:8.1f} {rate:12.1f} {r['peak_rss_mb']:12.0f}"
        )
    print(f"speed ratio (docs/s per core, herd / datatrove): {peer['cpu_s'] / ours['cpu_s']:.2f}x")
    for stage, field in (("after the filters (what reaches MinHash)", "filtered"), ("final", "kept")):
        a, b = {key(i) for i in ours[field]}, {key(i) for i in peer[field]}
        print(
            f"kept-set agreement {stage}: {len(a & b)} kept by both, {len(a - b)} only by herd, "
            f"{len(b - a)} only by datatrove; Jaccard {len(a & b) / max(len(a | b), 1):.3f}"
        )
    print(
        f"MinHash duplicates removed: herd {len(ours['filtered']) - len(ours['kept'])}, datatrove "
        f"{len(peer['filtered']) - len(peer['kept'])} (one survivor per cluster, chosen differently: herd the "
        "smallest content hash, datatrove the first in input order)"
    )
    print("herd seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in ours["steps_seconds"].items()))


if __name__ == "__main__":
    main()
