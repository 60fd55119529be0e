// MinHash signatures of many documents at once, in data/minhash.py's hash family: each shingle's 64-bit hash x
// enters as its high 32 bits (key = x >> 32), and permutation k maps it to
//     h_k(key) = ((a_k * key + b_k) mod 2^64) >> 32        (a_k odd, 64-bit a_k and b_k)
// a strongly universal multiply-add-shift family; the signature keeps the minimum per permutation, and an
// empty document keeps 0xFFFFFFFF everywhere.
//
// Near-duplicate detection (paper section 3.1.1) signs every document of the web crawl; that is
// n_shingles x num_perm multiply-adds per document, the part worth a GPU. Shingling and hashing the text stay on
// the CPU, so the inputs are the 32-bit keys in CSR form.
#include <cuda_runtime.h>

#include <cstdint>

#define HERD_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr int kMaxThreads = 128;     // threads per document (block), fewer when num_perm is small
constexpr int kPermsPerThread = 4;   // permutations each thread keeps in registers per sweep
constexpr int kTile = 2048;          // keys staged in shared memory at a time

// One block per document. The block sweeps the document's keys through shared memory once per group of
// blockDim.x * kPermsPerThread permutations; every thread reads every key (a shared-memory broadcast).
__global__ void minhash_kernel(const uint32_t* __restrict__ keys, const int64_t* __restrict__ offsets,
                               const uint64_t* __restrict__ a, const uint64_t* __restrict__ b, int num_perm,
                               uint32_t* __restrict__ out) {
  __shared__ uint32_t tile[kTile];
  const int64_t doc = blockIdx.x;
  const int64_t begin = offsets[doc];
  const int64_t end = offsets[doc + 1];
  const int threads = blockDim.x;
  for (int group = 0; group < num_perm; group += threads * kPermsPerThread) {
    uint64_t pa[kPermsPerThread], pb[kPermsPerThread];
    uint32_t mins[kPermsPerThread];
#pragma unroll
    for (int k = 0; k < kPermsPerThread; ++k) {
      const int p = group + k * threads + threadIdx.x;
      pa[k] = p < num_perm ? a[p] : 0u;
      pb[k] = p < num_perm ? b[p] : 0u;
      mins[k] = 0xFFFFFFFFu;  // the empty signature
    }
    for (int64_t start = begin; start < end; start += kTile) {
      const int n = static_cast<int>(end - start < kTile ? end - start : kTile);
      __syncthreads();  // the previous tile is no longer read
      for (int i = threadIdx.x; i < n; i += threads) tile[i] = keys[start + i];
      __syncthreads();
      for (int i = 0; i < n; ++i) {
        const uint64_t key = tile[i];
#pragma unroll
        for (int k = 0; k < kPermsPerThread; ++k) {
          // unsigned 64-bit arithmetic wraps mod 2^64; the shift keeps the high half
          mins[k] = min(mins[k], static_cast<uint32_t>((pa[k] * key + pb[k]) >> 32));
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kPermsPerThread; ++k) {
      const int p = group + k * threads + threadIdx.x;
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

// Host arrays in, host array out: keys [n_keys] (the high 32 bits of each shingle hash), offsets [n_docs + 1]
// (document d is keys[offsets[d]:offsets[d + 1]]), a/b [num_perm], out [n_docs, num_perm]. Returns a cudaError_t.
HERD_EXPORT int herd_minhash(const uint32_t* keys, int64_t n_keys, const int64_t* offsets, int64_t n_docs,
                             const uint64_t* a, const uint64_t* b, int num_perm, uint32_t* out) {
  uint32_t *d_keys = nullptr, *d_out = nullptr;
  uint64_t *d_a = nullptr, *d_b = nullptr;
  int64_t* d_offsets = nullptr;
  cudaError_t err = to_device(&d_keys, keys, n_keys);
  if (err == cudaSuccess) err = to_device(&d_offsets, offsets, n_docs + 1);
  if (err == cudaSuccess) err = to_device(&d_a, a, num_perm);
  if (err == cudaSuccess) err = to_device(&d_b, b, num_perm);
  if (err == cudaSuccess) err = cudaMalloc(&d_out, sizeof(uint32_t) * (n_docs * num_perm > 0 ? n_docs * num_perm : 1));
  if (err == cudaSuccess && n_docs > 0) {
    // enough threads for one sweep of all permutations, in whole warps, at most kMaxThreads
    int threads = (num_perm + kPermsPerThread - 1) / kPermsPerThread;
    threads = threads < kMaxThreads ? (threads + 31) / 32 * 32 : kMaxThreads;
    minhash_kernel<<<static_cast<unsigned>(n_docs), threads>>>(d_keys, d_offsets, d_a, d_b, num_perm, d_out);
    err = cudaGetLastError();
    if (err == cudaSuccess) {
      err = cudaMemcpy(out, d_out, sizeof(uint32_t) * n_docs * num_perm, cudaMemcpyDeviceToHost);
    }
  }
  cudaFree(d_keys);
  cudaFree(d_offsets);
  cudaFree(d_a);
  cudaFree(d_b);
  cudaFree(d_out);
  return static_cast<int>(err);
}
