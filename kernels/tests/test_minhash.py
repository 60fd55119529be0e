"""libherd_cuda.so (Bazel's cuda_shared_library): it builds, loads and exports exactly its API; MinHash
signatures in data/minhash.py's hash family on real web text: the NumPy reference against the formula in exact
integer arithmetic, and the CUDA kernel against the reference where a GPU exists (data/tests/test_dedup.py
checks the reference against data.minhash.MinHasher itself)."""

import hashlib
import json
import subprocess

import numpy as np
import pytest

from kernels import minhash
from tools import assets


def test_library_builds_loads_and_exports_its_symbols():
    path = minhash.library_path()
    lib = minhash.load()  # the CUDA runtime is linked in statically: it loads without a driver
    dynamic = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in dynamic.stdout.splitlines() if line.strip()}
    assert exported == set(minhash.EXPORTED)  # everything else is hidden
    sections = subprocess.run(["readelf", "-S", str(path)], capture_output=True, text=True, check=True).stdout
    assert ".nv_fatbin" in sections  # the device code (sm_80, sm_90 and PTX) is embedded
    count, message = minhash.device_count(lib)
    assert count >= 0 and message  # e.g. (0, "CUDA driver version is insufficient ...") without a GPU


def shingle_hashes(text, k=5):
    """64-bit hashes of the word k-grams (blake2b here; the pipeline hashes with data.textnorm)."""
    words = text.split()
    grams = (" ".join(words[i : i + k]).encode() for i in range(max(len(words) - k + 1, 0)))
    return [int.from_bytes(hashlib.blake2b(g, digest_size=8).digest(), "little") for g in grams]


def corpus():
    """Shingle hashes of 12 C4 documents, a near-duplicate of the first, and an empty document, in CSR form."""
    with assets.open_text("web/c4_sample.jsonl") as f:
        texts = [json.loads(next(f))["text"] for _ in range(12)]
    words = texts[0].split()
    texts.append(" ".join(w if i % 10 else "changed" for i, w in enumerate(words)))  # every 10th word edited
    texts.append("")
    docs = [shingle_hashes(t) for t in texts]
    hashes = np.array([h for d in docs for h in d], dtype=np.uint64)
    offsets = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
    return docs, hashes, offsets


def parameters(num_perm, seed=0):
    """a odd, b any, uint64 [num_perm] (data.minhash.MinHasher draws its own from its seed)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
    return a, rng.integers(0, 2**64, num_perm, dtype=np.uint64, endpoint=False)


def test_cpu_signatures_equal_the_formula_in_exact_arithmetic():
    docs, hashes, offsets = corpus()
    a, b = parameters(96)
    sigs = minhash.signatures_cpu(hashes, offsets, a, b)
    assert sigs.shape == (14, 96) and sigs.dtype == np.uint32
    for d, doc in enumerate(docs[:-1]):
        want = [min(((int(ak) * (x >> 32) + int(bk)) % 2**64) >> 32 for x in doc) for ak, bk in zip(a, b)]
        np.testing.assert_array_equal(sigs[d], np.array(want, dtype=np.uint32), err_msg=f"document {d}")
    assert (sigs[-1] == 0xFFFFFFFF).all()  # the empty document
    # The estimate tracks the true Jaccard similarity of the near-duplicate pair.
    first, near = set(docs[0]), set(docs[-2])
    true_jaccard = len(first & near) / len(first | near)
    sigs = minhash.signatures_cpu(hashes, offsets, *parameters(512))
    estimate = (sigs[0] == sigs[-2]).mean()
    assert abs(estimate - true_jaccard) < 0.08, (estimate, true_jaccard)


def test_gpu_signatures_equal_cpu_reference_and_refuse_clearly_without_a_gpu():
    _, hashes, offsets = corpus()
    long_doc = np.random.default_rng(0).integers(0, 2**64, 5000, dtype=np.uint64, endpoint=False)  # > one tile
    hashes = np.concatenate([hashes, long_doc])
    offsets = np.append(offsets, offsets[-1] + long_doc.size)
    count, message = minhash.device_count()
    if count == 0:  # no usable GPU (these CI machines): the GPU path refuses, naming the runtime's reason
        with pytest.raises(RuntimeError, match="needs a CUDA GPU") as refusal:
            minhash.signatures(hashes, offsets, *parameters(112))
        assert message in str(refusal.value)
        return
    # 112: the pipeline's 14 bands x 8 rows (one sweep of 32 threads); 700: more than one sweep of 128 threads
    for num_perm in (112, 700):
        a, b = parameters(num_perm, seed=num_perm)
        np.testing.assert_array_equal(
            minhash.signatures(hashes, offsets, a, b), minhash.signatures_cpu(hashes, offsets, a, b)
        )


def test_bad_input_is_named():
    a, b = parameters(4)
    with pytest.raises(ValueError, match="from 0 to len"):
        minhash.signatures_cpu(np.arange(5, dtype=np.uint64), np.array([0, 3]), a, b)
    with pytest.raises(ValueError, match="decrease at document 1"):
        minhash.signatures_cpu(np.arange(5, dtype=np.uint64), np.array([0, 3, 2, 5]), a, b)
    with pytest.raises(ValueError, match="uint64 shingle hashes, got uint32"):
        minhash.signatures_cpu(np.arange(5, dtype=np.uint32), np.array([0, 5]), a, b)
    with pytest.raises(ValueError, match="a and b must be uint64"):
        minhash.signatures_cpu(np.arange(5, dtype=np.uint64), np.array([0, 5]), a, b[:3])
