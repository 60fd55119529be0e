"""MinHash signatures: herd (numpy, data/minhash.py) vs datasketch vs rensa (Rust), side by side on the same
texts (the vendored C4 sample, repeated), 112 permutations (14 bands x 8 rows), word 5-gram shingles of the same
normalised text, one core. Each library gets its own natural input: herd takes texts; datasketch and rensa
take the list of shingle strings, which their users build in Python (that time is counted, and reported
apart too). Rounds run every library in rotating order; medians over rounds, with their range.

rensa lives in the benchmark venv only:

    /tmp/dtvenv/bin/pip install rensa datasketch numpy xxhash scipy pyarrow tqdm
    PYTHONPATH=. /tmp/dtvenv/bin/python data/benchmarks/bench_minhash.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from data.minhash import MinHasher
from data.textnorm import normalize
from tools import assets


def shingles(text: str, n: int = 5) -> list[str]:
    words = normalize(text).split()
    return [" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))]


def cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3, help="copies of the C4 sample")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, each running every library, in rotating order")
    args = ap.parse_args()
    with assets.open_text("web/c4_sample.jsonl") as f:
        texts = [json.loads(line)["text"] for line in f] * args.repeat
    n = len(texts)
    print(f"{n} documents, {sum(map(len, texts)) / 1e6:.1f} M characters, 112 permutations, {args.rounds} rounds")
    herd = MinHasher(112, 5, seed=1)
    herd.signatures(texts[:10])  # warm-up
    import datasketch

    def run_datasketch():
        for s in [shingles(t) for t in texts]:
            m = datasketch.MinHash(num_perm=112, seed=1)
            m.update_batch([x.encode("utf-8") for x in s])
            m.digest()

    runs = {"herd": lambda: herd.signatures(texts), "datasketch": run_datasketch}
    try:
        from rensa import RMinHash

        def run_rensa():
            for s in [shingles(t) for t in texts]:
                m = RMinHash(num_perm=112, seed=1)
                m.update(s)
                m.digest()

        runs["rensa"] = run_rensa
    except ImportError:
        print("rensa is not installed: skipped")
    results: dict[str, list[float]] = {name: [] for name in [*runs, "shingling"]}
    for r in range(args.rounds):
        names = list(runs)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            results[name].append(cpu(runs[name]))
        results["shingling"].append(cpu(lambda: [shingles(t) for t in texts]))
    med = {name: statistics.median(xs) for name, xs in results.items()}
    print(f"shingling in Python (counted in datasketch's and rensa's times): {med['shingling']:.2f} s CPU")
    for name in runs:
        xs = results[name]
        print(f"{name:12s} {med[name]:7.2f} s CPU (min {min(xs):.2f}, max {max(xs):.2f})  {n / med[name]:9.0f} docs/s")
    for name in runs:
        if name != "herd":
            ratios = [p / h for p, h in zip(results[name], results["herd"])]
            print(
                f"herd / {name}: {statistics.median(ratios):.2f}x the speed (per round: min {min(ratios):.2f}, "
                f"max {max(ratios):.2f})"
            )
    # Sanity: herd's signature agreement estimates Jaccard as well as the peers' do.
    a, b = texts[0], " ".join(texts[0].split()[:-40])
    sa, sb = set(shingles(a)), set(shingles(b))
    sig = herd.signatures([a, b])
    print(f"Jaccard {len(sa & sb) / len(sa | sb):.3f}, herd estimate {np.mean(sig[0] == sig[1]):.3f}")


if __name__ == "__main__":
    main()
