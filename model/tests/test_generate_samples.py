"""generate(samples=K): K continuations per prompt from one shared prefill equal generating from the K-times
repeated prompt list (greedy and seeded sampling, eager and compiled), and the prefill runs on B rows, not B*K."""

import pytest
import torch

from model.generate import generate, stream
from model.llama import build
from model.presets import preset

PROMPTS = [[5, 17, 99, 3, 250, 7, 8], [42], [300, 301, 302, 303]]
K = 4


@pytest.fixture(scope="module")
def model():
    m = build(preset("tiny", n_layers=2, vocab_size=512, max_seq_len=128), seed=3)
    with torch.no_grad():
        m.output.weight.mul_(4.0)  # sharp logits: greedy paths not decided by float noise
    return m.eval()


def repeated(prompts, k):
    return [p for p in prompts for _ in range(k)]  # prompt-major, like samples=k


def test_greedy_samples_are_copies_of_one_greedy_generation(model):
    one = generate(model, PROMPTS, max_new_tokens=10)
    many = generate(model, PROMPTS, max_new_tokens=10, samples=K)
    assert len(many) == len(PROMPTS) * K
    assert many == repeated(one, K)


def test_seeded_samples_equal_the_repeated_prompt_list(model):
    kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    shared = generate(model, PROMPTS, samples=K, **kw)
    assert shared == generate(model, repeated(PROMPTS, K), **kw)
    assert shared == generate(model, PROMPTS, samples=K, **kw)  # reproducible
    assert len({tuple(s) for s in shared[:K]}) > 1  # the K samples of a prompt differ
    # Stop tokens: rows stop independently, each as it would in the repeated list.
    stop = shared[0][3]
    assert generate(model, PROMPTS, samples=K, stop_tokens=[stop], **kw) == generate(
        model, repeated(PROMPTS, K), stop_tokens=[stop], **kw
    )


def test_prefill_runs_on_b_rows_and_decoding_on_b_times_k(model):
    shapes = []
    hook = model.tok_embeddings.register_forward_hook(lambda mod, args, out: shapes.append(tuple(args[0].shape)))
    try:
        steps = list(stream(model, PROMPTS, max_new_tokens=5, samples=K, temperature=1.0, seed=0))
    finally:
        hook.remove()
    L = max(len(p) for p in PROMPTS)
    assert shapes[0] == (len(PROMPTS), L)  # the prefill: B rows
    assert shapes[1:] == [(len(PROMPTS) * K, 1)] * 4  # then one token at a time for B*K rows
    assert all(len(s) == len(PROMPTS) * K for s in steps)


def test_samples_must_be_positive(model):
    with pytest.raises(ValueError, match="samples must be >= 1"):
        generate(model, PROMPTS, max_new_tokens=4, samples=0)


def test_compiled_decoding_with_samples_matches_eager():
    m = build(preset("tiny", dim=64, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=256, max_seq_len=256), seed=1)
    prompts = [[5, 17, 99, 3], [42]]
    kw = dict(max_new_tokens=8, temperature=0.9, top_p=0.8, seed=4, samples=3)
    assert generate(m, prompts, compile=True, **kw) == generate(m, prompts, **kw)
