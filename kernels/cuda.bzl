"""cuda_shared_library: .cu sources compiled and linked by nvcc into one shared library for ctypes.

Bazel 4's native rules know nothing of CUDA, so this is a genrule around nvcc. The CUDA runtime is linked
statically (nvcc's default), so the library needs only the driver (libcuda.so) at run time, and it loads
(and reports "no device") on machines without one. nvcc is taken from $NVCC (pass --action_env=NVCC=...),
else PATH, else /usr/local/cuda/bin/nvcc.
"""

def cuda_shared_library(name, srcs, arches = ["80", "90"], copts = [], **kwargs):
    """Builds lib<name>.so from `srcs` (.cu), with SASS for each compute capability in `arches` plus PTX
    for the newest (forward compatible). Symbols are hidden unless marked visibility("default")."""
    gencode = ["-gencode=arch=compute_%s,code=sm_%s" % (a, a) for a in arches]
    gencode.append("-gencode=arch=compute_%s,code=compute_%s" % (arches[-1], arches[-1]))
    cmd = """
NVCC="$${NVCC:-$$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
if [ ! -x "$$NVCC" ]; then
  echo "cuda_shared_library(%s): nvcc not found: install the CUDA toolkit or build with --action_env=NVCC=/path/to/nvcc" >&2
  exit 1
fi
export TMPDIR="$$(mktemp -d "$(@D)/nvcc.XXXXXX")"
"$$NVCC" -O3 -std=c++17 -shared -Xcompiler -fPIC,-fvisibility=hidden %s %s -o $@ %s
rm -rf "$$TMPDIR"
""" % (name, " ".join(gencode), " ".join(copts), " ".join(["$(location %s)" % s for s in srcs]))
    native.genrule(
        name = name,
        srcs = srcs,
        outs = ["lib%s.so" % name],
        cmd = cmd,
        message = "nvcc %s" % name,
        **kwargs
    )
