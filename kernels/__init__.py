"""Triton kernels for the Llama 3 hot paths and CUDA built by Bazel."""
