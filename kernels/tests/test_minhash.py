"""libherd_cuda.so (Bazel's cuda_shared_library): it builds, loads and exports exactly its API; MinHash
signatures equal datasketch's on real web text (CPU reference here; the CUDA kernel where a GPU exists)."""

import json
import subprocess

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.hashfunc import sha1_hash32

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


def c4_documents(n):
    with assets.open_text("web/c4_sample.jsonl") as f:
        return [json.loads(next(f))["text"] for _ in range(n)]


def shingles(text, k=5):
    words = text.split()
    return [" ".join(words[i : i + k]).encode() for i in range(max(len(words) - k + 1, 0))]


def corpus():
    """Shingle hashes of 12 C4 documents, a near-duplicate of the first, and an empty document, in CSR form."""
    texts = c4_documents(12)
    words = texts[0].split()
    texts.append(" ".join(w if i % 10 else "changed" for i, w in enumerate(words)))  # every 10th word edited
    texts.append("")
    docs = [shingles(t) for t in texts]
    hashes = np.array([sha1_hash32(s) for d in docs for s in d], dtype=np.uint32)
    offsets = np.cumsum([0] + [len(d) for d in docs]).astype(np.int64)
    return docs, hashes, offsets


def test_cpu_signatures_equal_datasketch():
    docs, hashes, offsets = corpus()
    sigs = minhash.signatures_cpu(hashes, offsets, num_perm=96, seed=3)
    for d, doc in enumerate(docs):
        m = MinHash(num_perm=96, seed=3)
        m.update_batch(doc)
        np.testing.assert_array_equal(sigs[d], m.hashvalues, err_msg=f"document {d}")
    assert (sigs[-1] == 0xFFFFFFFF).all()  # the empty document
    # The estimate tracks the true Jaccard similarity of the near-duplicate pair.
    a, b = set(docs[0]), set(docs[-2])
    true_jaccard = len(a & b) / len(a | b)
    sigs = minhash.signatures_cpu(hashes, offsets, num_perm=512)
    estimate = (sigs[0] == sigs[-2]).mean()
    assert abs(estimate - true_jaccard) < 0.08, (estimate, true_jaccard)


def test_gpu_signatures_equal_cpu_reference_and_refuse_clearly_without_a_gpu():
    _, hashes, offsets = corpus()
    long_doc = np.random.default_rng(0).integers(0, 2**32, 5000, dtype=np.uint32)  # spans several smem tiles
    hashes = np.concatenate([hashes, long_doc])
    offsets = np.append(offsets, offsets[-1] + long_doc.size)
    count, message = minhash.device_count()
    if count == 0:  # no usable GPU (these CI machines): the GPU path refuses, naming the runtime's reason
        with pytest.raises(RuntimeError, match="needs a CUDA GPU") as refusal:
            minhash.signatures(hashes, offsets, 128)
        assert message in str(refusal.value)
        return
    for num_perm in (128, 700):  # 700: more permutations than one sweep of a block covers (512)
        np.testing.assert_array_equal(
            minhash.signatures(hashes, offsets, num_perm), minhash.signatures_cpu(hashes, offsets, num_perm)
        )


def test_bad_offsets_are_named():
    with pytest.raises(ValueError, match="from 0 to len"):
        minhash.signatures_cpu(np.arange(5, dtype=np.uint32), np.array([0, 3]))
    with pytest.raises(ValueError, match="decrease at document 1"):
        minhash.signatures_cpu(np.arange(5, dtype=np.uint32), np.array([0, 3, 2, 5]))
