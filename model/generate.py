"""Batched KV-cache generation (greedy, or temperature + top-p sampling with a seed).

Prompts of different lengths are left-padded to a common length L, so every row writes the same cache slot at
every step. Row b's padding (the first pad[b] slots) is masked out of attention and its RoPE positions start at 0
at its first real token, so each row computes exactly what it would alone. The cache is allocated once per
request, sized L + max_new_tokens.

With `compile=True` the one-token decoding step runs through torch.compile (gpt-fast style): under compilation
the step has static shapes (it writes its slot with index_copy_ at a position tensor and attends over the whole
cache with a -inf bias on empty and padding slots), so one graph serves every step of a request. The cache size
is then rounded up to a multiple of 256 so that requests of similar length share a compiled graph.

With `samples=K` each prompt is continued K times (rejection sampling, best-of-K): the B prompts are prefilled
once, then the cache is expanded to B*K rows (`KVCache.repeat_interleave`) and decoding runs on all of them. The
first tokens are drawn from the prefill's logits repeated the same way, so with a seed the result equals, token for
token, generating from each prompt repeated K times (the generator sees the same [B*K, V] draws in the same order).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import torch

from model.attention import DocMask
from model.llama import Transformer

COMPILE_BUCKET = 256


def _compiling() -> bool:
    return torch.compiler.is_compiling()


class LayerKV:
    """One layer's cache: keys/values [B, H_kv, S, D], filled up to the parent cache's length."""

    def __init__(self, cache: KVCache, k: torch.Tensor, v: torch.Tensor):
        self.cache, self.k, self.v = cache, k, v

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values [B, H_kv, T, D]; return the cached ones to attend over (views, no copy)."""
        if _compiling():  # static shapes: write at the position tensor, attend over every slot
            self.k.index_copy_(2, self.cache.pos, k)
            self.v.index_copy_(2, self.cache.pos, v)
            return self.k, self.v
        start, end = self.cache.length, self.cache.length + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """Keys/values of every layer for B sequences of up to `max_len` tokens, `pad[b]` left-padding slots each.
    `length` (a Python int) counts the filled slots; `pos` holds the same number as a tensor for compiled steps."""

    def __init__(
        self,
        model: Transformer,
        batch: int,
        max_len: int,
        pad: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
    ):
        args = model.args
        if max_len > args.max_seq_len:
            raise ValueError(f"KV cache of {max_len} positions exceeds the model's max_seq_len {args.max_seq_len}")
        device = model.tok_embeddings.weight.device
        dtype = dtype or model.tok_embeddings.weight.dtype
        shape = (batch, args.kv_heads, max_len, args.head_dim)
        self.layers = {
            key: LayerKV(self, *(torch.zeros(shape, device=device, dtype=dtype) for _ in "kv")) for key in model.layers
        }
        self.pad = torch.zeros(batch, dtype=torch.long, device=device) if pad is None else pad.to(device)
        self.max_len, self.length = max_len, 0
        self.pos = torch.zeros(1, dtype=torch.long, device=device)
        # 0 for real slots, -inf for each row's left padding: [B, 1, 1, max_len], sliced per decoding step.
        self.slots = torch.arange(max_len, device=device)
        self.pad_bias = torch.zeros(batch, 1, 1, max_len, device=device, dtype=dtype)
        self.pad_bias.masked_fill_((self.slots[None, :] < self.pad[:, None])[:, None, None, :], float("-inf"))

    def repeat_interleave(self, k: int) -> None:
        """Expand every row to k consecutive rows (row b -> rows b*k .. b*k+k-1): keys, values and padding."""
        for kv in self.layers.values():
            kv.k, kv.v = kv.k.repeat_interleave(k, dim=0), kv.v.repeat_interleave(k, dim=0)
        self.pad = self.pad.repeat_interleave(k, dim=0)
        self.pad_bias = self.pad_bias.repeat_interleave(k, dim=0)

    def layer(self, key: str) -> LayerKV:
        return self.layers[key]

    def positions(self, T: int) -> torch.Tensor:
        """RoPE positions [B, T] of the next T tokens: slot index minus the row's padding."""
        if T == 1:  # decoding: real rows only, so no clamping
            if not _compiling() and self.length + 1 > self.max_len:
                raise ValueError(f"KV cache full: {self.length} + 1 tokens > {self.max_len} slots")
            return (self.pos - self.pad)[:, None]
        if self.length + T > self.max_len:
            raise ValueError(f"KV cache full: {self.length} + {T} tokens > {self.max_len} slots")
        slots = torch.arange(self.length, self.length + T, device=self.pad.device)
        return (slots[None, :] - self.pad[:, None]).clamp(min=0)

    def mask(self, T: int) -> DocMask:
        """[B, 1, T, length+T]: causal over the row's real slots. A padding query sees only itself, so no row of
        the mask is empty (an empty row would give NaN, which would leak through the cached values)."""
        if T == 1:  # decoding: every real slot so far, as an additive bias (sdpa needs no bool -> float pass)
            if _compiling():  # all slots, the ones after this position masked too
                return DocMask("sdpa", dense=self.pad_bias.masked_fill(self.slots > self.pos, float("-inf")))
            return DocMask("sdpa", dense=self.pad_bias[..., : self.length + 1])
        query = torch.arange(self.length, self.length + T, device=self.pad.device)[:, None]  # [T, 1]
        key = torch.arange(self.length + T, device=self.pad.device)[None, :]  # [1, S]
        real = key[None] >= self.pad[:, None, None]  # [B, 1, S]
        allowed = (key <= query)[None] & (real | (key == query)[None])  # [B, T, S]
        return DocMask("sdpa", dense=allowed.unsqueeze(1))

    def advance(self, T: int) -> None:
        self.pos += T
        if not _compiling():  # a compiled step leaves the Python count to its caller (no guard on it)
            self.length += T


def _decode(model: Transformer, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits [B, V] of the last position after feeding `tokens` [B, T] through the cache."""
    return model.output(model.hidden(tokens, cache=cache)[:, -1]).float()


@functools.cache
def compiled_decode():
    """One compiled wrapper for the process, so every request reuses its graphs."""
    return torch.compile(_decode, fullgraph=True, dynamic=False)


def sample(
    logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Next tokens [B] from logits [B, V]: argmax when temperature is 0, else sample from
    softmax(logits / temperature) restricted to the nucleus, the smallest set of most likely tokens whose
    probability reaches top_p."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability mass ranked above each token
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the top token always stays (before = 0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check(
    model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int, top_p: float, samples: int
) -> None:
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    vocab = model.args.vocab_size
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty (start it with <|begin_of_text|>)")
        bad = [t for t in p if not 0 <= int(t) < vocab]
        if bad:
            raise ValueError(f"prompt {i} has token ids outside the vocabulary (size {vocab}): {bad[:5]}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > model.args.max_seq_len:
        raise ValueError(
            f"longest prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"max_seq_len {model.args.max_seq_len}"
        )


@torch.inference_mode()
def stream(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_tokens: Sequence[int] = (),
    seed: int | None = None,
    compile: bool = False,
    samples: int = 1,
) -> Iterator[list[int | None]]:
    """Yield one list per step: each row's new token, or None once that row has stopped (stop tokens are not
    yielded). Rows are the prompts, or with `samples=K` each prompt's K samples, prompt-major (B*K rows: prompt
    0's K samples first). Ends when every row has stopped or after max_new_tokens steps."""
    _check(model, prompts, max_new_tokens, top_p, samples)
    device = model.tok_embeddings.weight.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    B, L = len(prompts), int(lengths.max())
    tokens = torch.zeros(B, L, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):  # left padding: each prompt ends at slot L-1
        tokens[b, L - len(p) :] = torch.as_tensor(list(p), dtype=torch.long, device=device)
    size = L + max_new_tokens
    if compile:  # bucketed cache sizes, so that similar requests reuse one compiled graph
        size = min(-(-size // COMPILE_BUCKET) * COMPILE_BUCKET, model.args.max_seq_len)
    cache = KVCache(model, B, size, pad=L - lengths)
    step_fn = compiled_decode() if compile else _decode
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    stops = {int(t) for t in stop_tokens}
    done = [False] * (B * samples)
    logits = _decode(model, tokens, cache)  # the prefill (eager: its shape changes with every request)
    if samples > 1:  # share the prefill: B rows -> B*K rows, prompt-major
        cache.repeat_interleave(samples)
        logits = logits.repeat_interleave(samples, dim=0)
    for step in range(max_new_tokens):
        nxt = sample(logits, temperature, top_p, generator)
        new = nxt.tolist()
        done = [d or t in stops for t, d in zip(new, done)]
        yield [None if d else t for t, d in zip(new, done)]
        if all(done) or step == max_new_tokens - 1:
            return
        logits = step_fn(model, nxt[:, None], cache)
        if compile:
            cache.length += 1


def generate(
    model: Transformer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_tokens: Sequence[int] = (),
    seed: int | None = None,
    compile: bool = False,
    samples: int = 1,
) -> list[list[int]]:
    """Each prompt's generated tokens (prompt excluded, generation cut before the first stop token); with
    `samples=K`, K generations per prompt sharing one prefill, prompt-major (out[b*K + j] is prompt b's j-th).
    `compile=True` compiles the decoding step (worth it for long generations; the first call pays the compile)."""
    out: list[list[int]] = [[] for _ in range(len(prompts) * samples)]
    for step in stream(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        stop_tokens=stop_tokens,
        seed=seed,
        compile=compile,
        samples=samples,
    ):
        for row, token in zip(out, step):
            if token is not None:
                row.append(token)
    return out
