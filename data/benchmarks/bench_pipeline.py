"""End to end against datatrove: the same pipeline (extraction, Gopher repetition and quality, C4, language filter,
MinHash dedup) over the same input, one core each, side by side; documents per second per core and the agreement
of the kept sets. Input: the vendored WARCs, the vendored C4 sample (JSONL) and the synthetic corpus's WARCs
(generated here, deterministic).

Equal work (datatrove_peer.py says how): lid.176 loaded once on both sides and given the same text, the same word
rule (herd's default, whitespace words, given to datatrove through its custom-tokenizer hook), the same MinHash
normalisation, the same output codec. The rules the peer copies from herd are checked against herd's before any
run. Equivalence is checked on the output: the kept sets must agree (Jaccard >= --min-jaccard) before MinHash,
and after it once each duplicate cluster is counted as one document (the two keep different members of a
cluster), and every repeat must keep the same set; otherwise the run is not equal work and no ratio is
reported. Repeats alternate which side runs first; the ratio is taken per repeat and its median and range
reported. CPU time is that of each side's process and every child it waited for (the extraction sandboxes).

datatrove runs from a separate venv (never the project's):

    python3.11 -m venv /tmp/dtvenv && /tmp/dtvenv/bin/pip install "datatrove[processing]==0.10.1" warcio spacy \\
        resiliparse faust-cchardet python-magic orjson zstandard rensa datasketch pyarrow
    ./bazelw run //data:bench_pipeline -- --peer-python /tmp/dtvenv/bin/python
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data import heuristics, langid
from data.document import read_documents
from data.langid import lid176_path
from data.synthetic import SyntheticConfig, write
from tools import assets
from tools.paths import PACKAGE_ROOT


def measured(cmd: list[str], env: dict | None = None) -> tuple[str, dict]:
    """Runs `cmd`; its stdout and its CPU seconds (user + system, the process and every child it waited for),
    wall seconds and peak RSS, measured from here the same way for both sides."""
    start = time.time()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(f"{cmd[:3]} failed:\n{err.read().decode(errors='replace')[-3000:]}")
        stdout = out.read().decode()
    return stdout, {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


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
        "report.chart=false",  # the funnel PNG: output datatrove does not make
    ]
    _, res = measured([sys.executable, "-m", "data.pipeline", *args], env)
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


PEER = Path(__file__).with_name("datatrove_peer.py")


def check_peer_rules() -> None:
    """The peer carries copies of herd's rules (it runs in datatrove's venv, without herd); they must still be
    herd's, or the two sides no longer do the same work."""
    spec = importlib.util.spec_from_file_location("datatrove_peer", PEER)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)  # top level: the rules only (datatrove is imported inside its functions)
    copies = {
        "C4 sentence end": (peer.SENTENCE_END, heuristics._SENTENCE_END),
        "language-ID text": (peer.LANGUAGE_MATH, langid._MATH),
    }
    for name, (theirs, ours) in copies.items():
        if (theirs.pattern, theirs.flags) != (ours.pattern, ours.flags):
            sys.exit(f"datatrove_peer.py's {name} rule is no longer herd's: {theirs.pattern!r} != {ours.pattern!r}")
    if langid.LangIdConfig().max_chars != peer.LANGUAGE_MAX_CHARS:
        sys.exit("datatrove_peer.py's language-ID text length is no longer herd's (LangIdConfig.max_chars)")


def run_peer(python: str, warc: Path, jsonl: Path, work: Path, words: str) -> dict:
    script = PEER
    cmd = [python, str(script), str(warc), str(jsonl), str(work), str(lid176_path()), f"--words={words}"]
    stdout, usage = measured(cmd)
    return {**json.loads(stdout.strip().splitlines()[-1]), **usage}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(len(a | b), 1)


def agreement(ours: dict, peer: dict) -> dict:
    """Jaccard of the kept sets before MinHash, and after it with every member of a datatrove duplicate cluster
    named by its cluster (so the choice of survivor does not count; the duplicate counts are compared apart)."""
    a, b = {key(i) for i in ours["filtered"]}, {key(i) for i in peer["filtered"]}
    cluster = {key(i): f"cluster {c}" for i, c in peer["clusters"].items()}
    fa, fb = ({cluster.get(key(i), key(i)) for i in side["kept"]} for side in (ours, peer))
    return {
        "filtered": jaccard(a, b),
        "both": len(a & b),
        "herd_only": len(a - b),
        "peer_only": len(b - a),
        "final_by_cluster": jaccard(fa, fb),
        "final_raw": jaccard({key(i) for i in ours["kept"]}, {key(i) for i in peer["kept"]}),
    }


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} (min {min(xs):.2f}, max {max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer-python", default="/tmp/dtvenv/bin/python")
    ap.add_argument("--scale", type=float, default=1.0, help="size of the synthetic part of the input")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating which goes first")
    ap.add_argument("--min-jaccard", type=float, default=0.9, help="agreement below which no ratio is reported")
    ap.add_argument(
        "--peer-words",
        choices=("whitespace", "spacy"),
        default="whitespace",
        help="datatrove's word rule: herd's (equal work) or its spaCy default (more work; not comparable)",
    )
    args = ap.parse_args()
    check_peer_rules()
    runs: dict[str, list[dict]] = {"herd": [], "datatrove": []}
    with tempfile.TemporaryDirectory(prefix="bench_pipeline.") as tmp:
        root = Path(tmp)
        warc, jsonl = prepare(root, args.scale)
        for r in range(args.repeats):
            order = ("herd", "datatrove") if r % 2 == 0 else ("datatrove", "herd")
            for side in order:
                out = root / f"{side}{r}"
                if side == "herd":
                    runs[side].append(run_ours(warc, jsonl, out))
                else:
                    runs[side].append(run_peer(args.peer_python, warc, jsonl, out, args.peer_words))
                shutil.rmtree(out)
                print(f"repeat {r + 1}/{args.repeats} {side}: {runs[side][-1]['cpu_s']:.1f} s CPU", file=sys.stderr)
    ours, peer = runs["herd"], runs["datatrove"]
    docs = ours[0]["docs_in"]
    print(f"input: {docs} documents (vendored WARCs + C4 sample + synthetic WARCs at scale {args.scale})")
    print(f"datatrove word rule: {args.peer_words}; {args.repeats} repeats, alternating which side runs first")
    print(f"{'':10s} {'kept':>6s} {'CPU s (median, min-max)':>26s} {'docs/s/core':>12s} {'peak RSS MB':>12s}")
    for name, rs in (("herd", ours), ("datatrove", peer)):
        cpu = [r["cpu_s"] for r in rs]
        print(
            f"{name:10s} {len(rs[0]['kept']):6d} {spread(cpu):>26s} {docs / statistics.median(cpu):12.1f} "
            f"{max(r['peak_rss_mb'] for r in rs):12.0f}"
        )
    unstable = [n for n, rs in (("herd", ours), ("datatrove", peer)) if len({tuple(sorted(r["kept"])) for r in rs}) > 1]
    for name in unstable:  # deterministic: every repeat must keep the same set, or the repeats did different work
        print(f"{name} kept different sets in different repeats")
    ag = agreement(ours[0], peer[0])
    print(
        f"kept-set agreement before MinHash: {ag['both']} kept by both, {ag['herd_only']} only by herd, "
        f"{ag['peer_only']} only by datatrove; Jaccard {ag['filtered']:.3f}"
    )
    removed = {n: len(r[0]["filtered"]) - len(r[0]["kept"]) for n, r in (("herd", ours), ("datatrove", peer))}
    print(
        f"after MinHash: Jaccard {ag['final_by_cluster']:.3f} counting each datatrove duplicate cluster once "
        f"({ag['final_raw']:.3f} by document id: the survivors differ, herd keeps the smallest content hash, "
        "datatrove the first in input order); duplicates removed: " + ", ".join(f"{n} {k}" for n, k in removed.items())
    )
    steps = {k: statistics.median(r["steps_seconds"][k] for r in ours) for k in ours[0]["steps_seconds"]}
    print("herd seconds per step (median): " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    ratios = [p["cpu_s"] / o["cpu_s"] for o, p in zip(ours, peer)]
    agree = min(ag["filtered"], ag["final_by_cluster"]) >= args.min_jaccard
    if agree and not unstable and args.peer_words == "whitespace":
        print(f"speed ratio (docs/s per core, herd / datatrove), per repeat: {spread(ratios)}x")
    else:
        why = (
            "datatrove splits words with spaCy"
            if args.peer_words != "whitespace"
            else "the kept sets disagree"
            if not agree
            else "a side kept different sets in different repeats"
        )
        print(f"NOT EQUAL WORK ({why}; agreement threshold {args.min_jaccard}): the CPU ratio {spread(ratios)}x")
        sys.exit(1)


if __name__ == "__main__":
    main()
