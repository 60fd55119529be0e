"""MinHash signatures: herd (numpy, data/minhash.py) vs datasketch vs rensa (Rust), side by side on the same
texts (the vendored C4 sample, repeated), 112 permutations (14 bands x 8 rows), word 5-gram shingles of the same
normalised text, one core. Each library gets its own natural input: herd takes texts; datasketch and rensa
take the list of shingle strings, which their users build in Python (that time is counted, and reported
apart too).

rensa lives in the benchmark venv only:

    /tmp/dtvenv/bin/pip install rensa datasketch numpy xxhash scipy pyarrow tqdm
    PYTHONPATH=. /tmp/dtvenv/bin/python data/benchmarks/bench_minhash.py
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with assets.open_text("web/c4_sample.jsonl") as f:
        texts = [json.loads(line)["text"] for line in f] * args.repeat
    n = len(texts)
    print(f"{n} documents, {sum(map(len, texts)) / 1e6:.1f} M characters, 112 permutations")
    herd = MinHasher(112, 5, seed=1)
    herd.signatures(texts[:10])  # warm-up
    results = {"herd": cpu(lambda: herd.signatures(texts))}
    t_shingle = cpu(lambda: [shingles(t) for t in texts])
    sh = [shingles(t) for t in texts]
    import datasketch

    def run_datasketch():
        for s in sh:
            m = datasketch.MinHash(num_perm=112, seed=1)
            m.update_batch([x.encode("utf-8") for x in s])
            m.digest()

    results["datasketch"] = cpu(run_datasketch) + t_shingle
    try:
        from rensa import RMinHash

        def run_rensa():
            for s in sh:
                m = RMinHash(num_perm=112, seed=1)
                m.update(s)
                m.digest()

        results["rensa"] = cpu(run_rensa) + t_shingle
    except ImportError:
        print("rensa is not installed: skipped")
    print(f"shingling in Python (counted for datasketch and rensa): {t_shingle:.2f} s")
    for name, sec in results.items():
        print(f"{name:12s} {sec:7.2f} s CPU  {n / sec:9.0f} docs/s")
    for name, sec in results.items():
        if name != "herd":
            print(f"herd / {name}: {sec / results['herd']:.2f}x the speed")
    # Sanity: herd's signature agreement estimates Jaccard as well as the peers' do.
    a, b = texts[0], " ".join(texts[0].split()[:-40])
    sa, sb = set(shingles(a)), set(shingles(b))
    sig = herd.signatures([a, b])
    print(f"Jaccard {len(sa & sb) / len(sa | sb):.3f}, herd estimate {np.mean(sig[0] == sig[1]):.3f}")


if __name__ == "__main__":
    main()
