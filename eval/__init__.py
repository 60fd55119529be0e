"""Evaluation: GSM8K, MATH, needle-in-a-haystack, perplexity, contamination, scaling-law fits."""
