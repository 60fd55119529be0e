"""MinHash signatures on the GPU (kernels/cuda/minhash.cu, built by `//kernels:herd_cuda`), through ctypes.

The hash family is data/minhash.py's (its `backend: cuda` calls `signatures` here): for 64-bit shingle hashes x
and 64-bit parameters a (odd), b, permutation k gives
    h_k(x) = ((a_k * (x >> 32) + b_k) mod 2^64) >> 32
and a document's signature is the minimum of each h_k over its shingles (0xFFFFFFFF for an empty document).
The parameters are the caller's (data.minhash.MinHasher draws them from its seed), so GPU signatures are
bit-identical to the CPU pipeline's and its LSH bands and survivors do not change. `signatures_cpu` is the
NumPy statement of the same computation.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

LIBRARY = "libherd_cuda.so"
EXPORTED = ("herd_cuda_device_count", "herd_cuda_error_string", "herd_minhash")


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
    u32p, u64p, i64p = (np.ctypeslib.ndpointer(t, flags="C") for t in (np.uint32, np.uint64, np.int64))
    lib.herd_cuda_device_count.argtypes = [ctypes.POINTER(ctypes.c_int)]
    lib.herd_cuda_device_count.restype = ctypes.c_int
    lib.herd_cuda_error_string.argtypes = [ctypes.c_int]
    lib.herd_cuda_error_string.restype = ctypes.c_char_p
    lib.herd_minhash.argtypes = [u32p, ctypes.c_int64, i64p, ctypes.c_int64, u64p, u64p, ctypes.c_int, u32p]
    lib.herd_minhash.restype = ctypes.c_int
    return lib


def device_count(lib: ctypes.CDLL | None = None) -> tuple[int, str]:
    """(number of CUDA devices, the CUDA runtime's message): 0 and the reason where there is no usable GPU."""
    lib = lib or load()
    count = ctypes.c_int(0)
    code = lib.herd_cuda_device_count(ctypes.byref(count))
    return (count.value if code == 0 else 0), lib.herd_cuda_error_string(code).decode()


def _check(
    hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(keys = hashes >> 32 as uint32, offsets, a, b), contiguous, or a ValueError naming what is wrong."""
    hashes = np.asarray(hashes)
    if hashes.dtype != np.uint64 or hashes.ndim != 1:
        raise ValueError(f"minhash: hashes must be 1-D uint64 shingle hashes, got {hashes.dtype} {hashes.shape}")
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != hashes.size:
        raise ValueError(f"minhash: offsets must run from 0 to len(hashes)={hashes.size}")
    if np.any(np.diff(offsets) < 0):
        raise ValueError(f"minhash: offsets decrease at document {int(np.argmax(np.diff(offsets) < 0))}")
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != np.uint64 or b.dtype != np.uint64 or a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"minhash: a and b must be uint64 [num_perm], got {a.dtype} {a.shape}, {b.dtype} {b.shape}")
    if not 1 <= a.size <= 1 << 16:
        raise ValueError(f"minhash: num_perm {a.size} must be in [1, 65536]")
    keys = np.ascontiguousarray(hashes >> np.uint64(32), dtype=np.uint32)
    return keys, offsets, np.ascontiguousarray(a), np.ascontiguousarray(b)


def signatures_cpu(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NumPy reference: uint32 [n_docs, num_perm] for the documents hashes[offsets[d]:offsets[d+1]]."""
    keys, offsets, a, b = _check(hashes, offsets, a, b)
    out = np.full((offsets.size - 1, a.size), 0xFFFFFFFF, dtype=np.uint32)
    for d in range(offsets.size - 1):
        doc = keys[offsets[d] : offsets[d + 1]].astype(np.uint64)
        if doc.size:  # uint64 arithmetic wraps mod 2^64
            out[d] = ((doc[:, None] * a[None, :] + b[None, :]) >> np.uint64(32)).min(axis=0)
    return out


def signatures(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """GPU signatures, uint32 [n_docs, num_perm], equal to signatures_cpu. Fails clearly without a GPU."""
    keys, offsets, a, b = _check(hashes, offsets, a, b)
    lib = load()
    count, message = device_count(lib)
    if count == 0:
        raise RuntimeError(
            f"minhash.signatures needs a CUDA GPU ({message}); on this machine use the NumPy path "
            "(data.minhash: backend=numpy)"
        )
    out = np.empty((offsets.size - 1, a.size), dtype=np.uint32)
    code = lib.herd_minhash(keys, keys.size, offsets, offsets.size - 1, a, b, a.size, out)
    if code:
        raise RuntimeError(f"herd_minhash failed: {lib.herd_cuda_error_string(code).decode()}")
    return out
