// MinHash signatures of many documents at once, bit-identical to datasketch 2.x's default scheme ("affine32"):
// each shingle's 32-bit hash h is pre-mixed by the MurmurHash3 finalizer, then permutation k maps it to
// a_k * fmix32(h) + b_k (mod 2^32, a_k odd) and the signature keeps the minimum per permutation.
//
// Near-duplicate detection (paper section 3.1.1) signs every document of the web crawl; that is
// n_shingles x num_perm multiply-adds per document, the part worth a GPU. Hashing the shingle bytes stays
// on the CPU (sha1 in datasketch), so the inputs are the 32-bit shingle hashes in CSR form.
#include <cuda_runtime.h>

#include <cstdint>

#define HERD_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr int kThreads = 128;        // threads per document (block)
constexpr int kPermsPerThread = 4;   // permutations each thread keeps in registers per sweep
constexpr int kTile = 2048;          // mixed shingle hashes staged in shared memory at a time

__device__ __forceinline__ uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

// One block per document. The block sweeps the document's hashes through shared memory once per group of
// kThreads * kPermsPerThread permutations; every thread reads every hash (a shared-memory broadcast).
__global__ void minhash_kernel(const uint32_t* __restrict__ hashes, const int64_t* __restrict__ offsets,
                               const uint32_t* __restrict__ a, const uint32_t* __restrict__ b, int num_perm,
                               uint32_t* __restrict__ out) {
  __shared__ uint32_t tile[kTile];
  const int64_t doc = blockIdx.x;
  const int64_t begin = offsets[doc];
  const int64_t end = offsets[doc + 1];
  for (int group = 0; group < num_perm; group += kThreads * kPermsPerThread) {
    uint32_t pa[kPermsPerThread], pb[kPermsPerThread], mins[kPermsPerThread];
#pragma unroll
    for (int k = 0; k < kPermsPerThread; ++k) {
      const int p = group + k * kThreads + threadIdx.x;
      pa[k] = p < num_perm ? a[p] : 0u;
      pb[k] = p < num_perm ? b[p] : 0u;
      mins[k] = 0xFFFFFFFFu;  // the empty signature, as datasketch initialises it
    }
    for (int64_t start = begin; start < end; start += kTile) {
      const int n = static_cast<int>(end - start < kTile ? end - start : kTile);
      __syncthreads();  // the previous tile is no longer read
      for (int i = threadIdx.x; i < n; i += kThreads) tile[i] = fmix32(hashes[start + i]);
      __syncthreads();
      for (int i = 0; i < n; ++i) {
        const uint32_t h = tile[i];
#pragma unroll
        for (int k = 0; k < kPermsPerThread; ++k) mins[k] = min(mins[k], pa[k] * h + pb[k]);
      }
    }
#pragma unroll
    for (int k = 0; k < kPermsPerThread; ++k) {
      const int p = group + k * kThreads + threadIdx.x;
      if (p < num_perm) out[doc * num_perm + p] = mins[k];
    }
  }
}

template <typename T>
cudaError_t to_device(T** dst, const T* src, int64_t count) {
  cudaError_t err = cudaMalloc(dst, sizeof(T) * (count > 0 ? count : 1));
  if (err != cudaSuccess || count == 0) return err;
  return cudaMemcpy(*dst, src, sizeof(T) * count, cudaMemcpyHostToDevice);
}

}  // namespace

// Number of CUDA devices in *count; returns a cudaError_t (0 = success).
HERD_EXPORT int herd_cuda_device_count(int* count) {
  *count = 0;
  return static_cast<int>(cudaGetDeviceCount(count));
}

HERD_EXPORT const char* herd_cuda_error_string(int code) {
  return cudaGetErrorString(static_cast<cudaError_t>(code));
}

// Host arrays in, host array out: hashes [n_hashes], offsets [n_docs + 1] (document d is
// hashes[offsets[d]:offsets[d + 1]]), a/b [num_perm], out [n_docs, num_perm]. Returns a cudaError_t.
HERD_EXPORT int herd_minhash(const uint32_t* hashes, int64_t n_hashes, const int64_t* offsets, int64_t n_docs,
                             const uint32_t* a, const uint32_t* b, int num_perm, uint32_t* out) {
  uint32_t *d_hashes = nullptr, *d_a = nullptr, *d_b = nullptr, *d_out = nullptr;
  int64_t* d_offsets = nullptr;
  cudaError_t err = to_device(&d_hashes, hashes, n_hashes);
  if (err == cudaSuccess) err = to_device(&d_offsets, offsets, n_docs + 1);
  if (err == cudaSuccess) err = to_device(&d_a, a, num_perm);
  if (err == cudaSuccess) err = to_device(&d_b, b, num_perm);
  if (err == cudaSuccess) err = cudaMalloc(&d_out, sizeof(uint32_t) * (n_docs * num_perm > 0 ? n_docs * num_perm : 1));
  if (err == cudaSuccess && n_docs > 0) {
    minhash_kernel<<<static_cast<unsigned>(n_docs), kThreads>>>(d_hashes, d_offsets, d_a, d_b, num_perm, d_out);
    err = cudaGetLastError();
    if (err == cudaSuccess) {
      err = cudaMemcpy(out, d_out, sizeof(uint32_t) * n_docs * num_perm, cudaMemcpyDeviceToHost);
    }
  }
  cudaFree(d_hashes);
  cudaFree(d_offsets);
  cudaFree(d_a);
  cudaFree(d_b);
  cudaFree(d_out);
  return static_cast<int>(err);
}
