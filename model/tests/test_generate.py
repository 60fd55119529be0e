import pytest
import torch

from model.generate import KVCache, generate, sample
from model.llama import build
from model.presets import preset


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build(preset("tiny", n_layers=2, vocab_size=512, max_seq_len=128), seed=3)
    # Sharper logits than the init gives, so greedy paths are not decided by float noise.
    with torch.no_grad():
        m.output.weight.mul_(4.0)
    return m.eval()


PROMPTS = [[5, 17, 99, 3, 250, 7, 8], [42], [300, 301, 302, 303]]


def test_cached_logits_equal_full_forward(model):
    """Prefill + one token at a time through the cache gives the logits of a plain forward on each
    (unpadded) sequence, for every position of every row of a ragged batch."""
    torch.manual_seed(1)
    new = torch.randint(0, 512, (len(PROMPTS), 6))
    L = max(len(p) for p in PROMPTS)
    tokens = torch.zeros(len(PROMPTS), L, dtype=torch.long)
    for b, p in enumerate(PROMPTS):
        tokens[b, L - len(p) :] = torch.tensor(p)
    pad = torch.tensor([L - len(p) for p in PROMPTS])
    cache = KVCache(model, len(PROMPTS), L + 6, pad=pad)
    with torch.no_grad():
        steps = [model(tokens, cache=cache)]
        for t in range(6):
            steps.append(model(new[:, t : t + 1], cache=cache))
        cached = torch.cat(steps, dim=1)  # [B, L + 6, V]
        for b, p in enumerate(PROMPTS):
            full = model(torch.cat([torch.tensor(p), new[b]])[None])[0]
            torch.testing.assert_close(cached[b, pad[b] :], full, atol=1e-5, rtol=1e-5)
    assert cache.length == L + 6
    with pytest.raises(ValueError, match="KV cache full"):
        model(new[:, :1], cache=cache)


def test_greedy_batched_equals_one_by_one_and_argmax_path(model):
    batched = generate(model, PROMPTS, max_new_tokens=10)
    assert [len(g) for g in batched] == [10, 10, 10]
    for p, g in zip(PROMPTS, batched):
        assert generate(model, [p], max_new_tokens=10) == [g]
        # The greedy continuation is the argmax of a plain forward at every step.
        seq = list(p)
        with torch.no_grad():
            for _ in range(10):
                seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert seq[len(p) :] == g


def test_stop_tokens_cut_generation(model):
    free = generate(model, PROMPTS, max_new_tokens=12)
    stop = free[0][4]
    stopped = generate(model, PROMPTS, max_new_tokens=12, stop_tokens=[stop])
    for f, s in zip(free, stopped):
        expect = f[: f.index(stop)] if stop in f else f
        assert s == expect
    assert stopped[0] == free[0][: free[0].index(stop)] and len(stopped[0]) <= 4
    assert generate(model, PROMPTS, max_new_tokens=0) == [[], [], []]


def test_sampling_is_seeded(model):
    a = generate(model, PROMPTS, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    b = generate(model, PROMPTS, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    c = generate(model, PROMPTS, max_new_tokens=16, temperature=1.0, top_p=0.9, seed=8)
    assert a == b and a != c
    # A nucleus so small that only the top token survives is greedy decoding.
    assert generate(model, PROMPTS, max_new_tokens=8, temperature=1.0, top_p=1e-6, seed=1) == generate(
        model, PROMPTS, max_new_tokens=8
    )


def test_sampler_distribution_and_nucleus():
    # probabilities 0.5, 0.25, 0.125, 0.125: top_p=0.7 keeps tokens 0 and 1 (mass before token 2 is 0.75).
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.125, 0.125]])).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample(logits, 1.0, 1.0, g), minlength=4).float() / 20000
    torch.testing.assert_close(counts, torch.tensor([0.5, 0.25, 0.125, 0.125]), atol=0.015, rtol=0)
    counts = torch.bincount(sample(logits, 1.0, 0.7, g), minlength=4).float() / 20000
    assert counts[2] == 0 and counts[3] == 0 and abs(counts[0] - 2 / 3) < 0.015
    # Temperature 0.5 squares the probabilities: 0.25 : 0.0625 : 0.015625 : 0.015625, normalised.
    counts = torch.bincount(sample(logits, 0.5, 1.0, g), minlength=4).float() / 20000
    assert abs(counts[0] - 0.25 / 0.34375) < 0.015
    assert sample(logits[:2], 0.0).tolist() == [0, 0]


def test_bad_requests_are_refused(model):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[1], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, [[1, 512]], max_new_tokens=2)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 128"):
        generate(model, [[1] * 100], max_new_tokens=29)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], max_new_tokens=2, top_p=0.0)
