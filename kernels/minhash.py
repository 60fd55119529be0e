"""MinHash signatures on the GPU (kernels/cuda/minhash.cu, built by `//kernels:herd_cuda`), through ctypes.

Bit-identical to datasketch's default MinHash (scheme "affine32", datasketch >= 2.0): for documents whose
shingles were hashed with datasketch.hashfunc.sha1_hash32,
    signatures(hashes, offsets, num_perm, seed)[d] == MinHash(num_perm, seed).update_batch(shingles_d).hashvalues
so the GPU can sign the corpus while LSH bucketing and Jaccard estimates stay datasketch's. `signatures_cpu` is
the NumPy reference (and the path for machines without a GPU).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

LIBRARY = "libherd_cuda.so"
EXPORTED = ("herd_cuda_device_count", "herd_cuda_error_string", "herd_minhash")
_FMIX = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)  # MurmurHash3's 32-bit finalizer: shifts and multipliers


def library_path() -> Path:
    """$HERD_CUDA_LIB, else beside this file (Bazel runfiles), else the Bazel output tree of this checkout."""
    if os.environ.get("HERD_CUDA_LIB"):
        return Path(os.environ["HERD_CUDA_LIB"])
    here = Path(__file__).parent  # not resolved: under Bazel this is the runfiles tree, holding the library
    for path in (here / LIBRARY, Path(__file__).resolve().parent.parent / ".bazel" / "bin" / "kernels" / LIBRARY):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{LIBRARY} not found beside {here} nor in .bazel/bin/kernels/: build it with "
        "`./bazelw build //kernels:herd_cuda` (needs nvcc) or set HERD_CUDA_LIB"
    )


def load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path()))
    u32p, i64p = np.ctypeslib.ndpointer(np.uint32, flags="C"), np.ctypeslib.ndpointer(np.int64, flags="C")
    lib.herd_cuda_device_count.argtypes = [ctypes.POINTER(ctypes.c_int)]
    lib.herd_cuda_device_count.restype = ctypes.c_int
    lib.herd_cuda_error_string.argtypes = [ctypes.c_int]
    lib.herd_cuda_error_string.restype = ctypes.c_char_p
    lib.herd_minhash.argtypes = [u32p, ctypes.c_int64, i64p, ctypes.c_int64, u32p, u32p, ctypes.c_int, u32p]
    lib.herd_minhash.restype = ctypes.c_int
    return lib


def device_count(lib: ctypes.CDLL | None = None) -> tuple[int, str]:
    """(number of CUDA devices, the CUDA runtime's message): 0 and the reason where there is no usable GPU."""
    lib = lib or load()
    count = ctypes.c_int(0)
    code = lib.herd_cuda_device_count(ctypes.byref(count))
    return (count.value if code == 0 else 0), lib.herd_cuda_error_string(code).decode()


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 parameters: a odd, b any, both uint32 [num_perm], drawn from RandomState(seed)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _check(hashes: np.ndarray, offsets: np.ndarray, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    hashes = np.ascontiguousarray(hashes, dtype=np.uint32)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != hashes.size:
        raise ValueError(f"minhash: offsets must run from 0 to len(hashes)={hashes.size}")
    if np.any(np.diff(offsets) < 0):
        raise ValueError(f"minhash: offsets decrease at document {int(np.argmax(np.diff(offsets) < 0))}")
    if not 1 <= num_perm <= 1 << 16:
        raise ValueError(f"minhash: num_perm {num_perm} must be in [1, 65536]")
    return hashes, offsets


def signatures_cpu(hashes: np.ndarray, offsets: np.ndarray, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """NumPy reference: uint32 [n_docs, num_perm] for the documents hashes[offsets[d]:offsets[d+1]]."""
    hashes, offsets = _check(hashes, offsets, num_perm)
    a, b = permutations(num_perm, seed)
    s1, m1, s2, m2, s3 = (np.uint32(c) for c in _FMIX)
    h = hashes ^ (hashes >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    h = h ^ (h >> s3)
    out = np.full((offsets.size - 1, num_perm), 0xFFFFFFFF, dtype=np.uint32)
    for d in range(offsets.size - 1):
        doc = h[offsets[d] : offsets[d + 1]]
        if doc.size:
            out[d] = (doc[:, None] * a[None, :] + b[None, :]).min(axis=0)  # uint32 arithmetic wraps mod 2^32
    return out


def signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """GPU signatures, uint32 [n_docs, num_perm], equal to signatures_cpu. Fails clearly without a GPU."""
    hashes, offsets = _check(hashes, offsets, num_perm)
    lib = load()
    count, message = device_count(lib)
    if count == 0:
        raise RuntimeError(f"minhash.signatures needs a CUDA GPU ({message}); use signatures_cpu on this machine")
    a, b = permutations(num_perm, seed)
    out = np.empty((offsets.size - 1, num_perm), dtype=np.uint32)
    code = lib.herd_minhash(hashes, hashes.size, offsets, offsets.size - 1, a, b, num_perm, out)
    if code:
        raise RuntimeError(f"herd_minhash failed: {lib.herd_cuda_error_string(code).decode()}")
    return out
