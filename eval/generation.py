"""Batched greedy generation for the evals, with text stop strings, over any step-wise generator.

A *stream* is `fn(prompts, max_new_tokens, stop_tokens) -> Iterator[list[int | None]]`: one list per decoding
step with each prompt's new token, None once that prompt has stopped (model.generate.stream has this shape).
`as_stream` turns a model (batched KV-cache `model.generate.stream`) or any generate-like callable
(`fn(prompts, *, max_new_tokens, stop_tokens) -> list[list[int]]`, e.g. a test fake) into one.

`generate_texts` batches prompts of similar length together (less left padding), stops a batch as soon as every
row has emitted a stop token or a stop string (checked every `check_every` steps, so a base model that rambles on
into the next few-shot question costs only a few extra steps), and returns the text cut at the first stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:  # torch is imported where a model is used, so the graders can use `cut` without it
    import torch

Stream = Callable[[list[list[int]], int, Sequence[int]], Iterator[list[int | None]]]


def model_stream(model: torch.nn.Module, temperature: float = 0.0, seed: int | None = None) -> Stream:
    """model.generate.stream: step by step, so a batch can stop early."""
    from model.generate import stream

    def run(prompts, max_new_tokens, stop_tokens):
        return stream(
            model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, stop_tokens=stop_tokens, seed=seed
        )

    return run


def from_generate(fn: Callable[..., list[list[int]]]) -> Stream:
    """A stream over a generate-like callable that returns whole completions (stop tokens already cut)."""

    def run(prompts, max_new_tokens, stop_tokens):
        outs = fn(prompts, max_new_tokens=max_new_tokens, stop_tokens=stop_tokens)
        for step in range(max(len(o) for o in outs) if outs else 0):
            yield [o[step] if step < len(o) else None for o in outs]

    return run


def as_stream(model_or_fn) -> Stream:
    import torch

    if isinstance(model_or_fn, torch.nn.Module):
        return model_stream(model_or_fn)
    if callable(model_or_fn):
        return from_generate(model_or_fn)
    raise TypeError(f"expected a model or a generate-like callable, got {type(model_or_fn).__name__}")


def cut(text: str, stop_strings: Sequence[str]) -> str:
    """The text before the first stop string (what `until` does in lm-evaluation-harness)."""
    idx = [i for i in (text.find(s) for s in stop_strings) if i != -1]
    return text[: min(idx)] if idx else text


def stop_tokens_of(tokenizer) -> tuple[int, ...]:
    """End of text / turn / message ids (model.tokenizer.Tokenizer has them as `stop_tokens`)."""
    found = getattr(tokenizer, "stop_tokens", None)
    if found:
        return tuple(found)
    return tuple(t for t in (getattr(tokenizer, "eos_id", None), getattr(tokenizer, "eot_id", None)) if t is not None)


def generate_batch(
    stream: Stream,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    stop_tokens: Sequence[int] = (),
    check_every: int = 8,
) -> list[str]:
    """One batch: decoded completions cut at the first stop string."""
    tokens: list[list[int]] = [[] for _ in prompts]
    stopped = [False] * len(prompts)
    for step, new in enumerate(stream(prompts, max_new_tokens, tuple(stop_tokens))):
        for b, t in enumerate(new):
            if t is None:
                stopped[b] = True
            elif not stopped[b]:
                tokens[b].append(t)
        if stop_strings and (step + 1) % check_every == 0:
            for b in range(len(prompts)):
                # Only the tail can hold a new stop string: decode a little more than the last window.
                if not stopped[b]:
                    tail = tokenizer.decode(tokens[b][-(check_every + 16) :])
                    stopped[b] = any(s in tail for s in stop_strings)
        if all(stopped):
            break  # closes the stream: no more decoding steps for this batch
    return [cut(tokenizer.decode(t), stop_strings) for t in tokens]


def generate_texts(
    stream: Stream,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    stop_tokens: Sequence[int] | None = None,
    batch_size: int = 8,
    check_every: int = 8,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    desc: str = "generate",
    progress: bool = True,
) -> list[str]:
    """Completions of all prompts, in prompt order. Prompts are grouped by length into batches of `batch_size`;
    `on_batch(indices, texts)` is called after each batch (the harness appends them to its results file)."""
    stop_tokens = stop_tokens_of(tokenizer) if stop_tokens is None else tuple(stop_tokens)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    out: list[str | None] = [None] * len(prompts)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress or not batches):
        texts = generate_batch(
            stream,
            tokenizer,
            [prompts[i] for i in idx],
            max_new_tokens=max_new_tokens,
            stop_strings=stop_strings,
            stop_tokens=stop_tokens,
            check_every=check_every,
        )
        for i, t in zip(idx, texts):
            out[i] = t
        if on_batch is not None:
            on_batch(idx, texts)
    return out  # type: ignore[return-value]
