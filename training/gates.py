"""Long-context gates: fn(model, tokenizer, seq_len, *, n, seed) -> accuracy in [0, 1].

`passkey` is the passkey-retrieval check (Mohtashami & Jaggi 2023): a 5-digit key hidden at evenly spread
depths of `seq_len` tokens of repetitive filler, retrieved by greedy decoding. eval.niah.gate (the eval
package's needle-in-a-haystack on real essays) has the same signature; the recipes name it ("eval.niah:gate"), and
`resolve` imports whatever module:function a config names.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from training.losses import import_function

INTRO = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there."
)
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
ANSWER_TOKENS = 8  # room for the 5 digits however the tokenizer splits them


def passkey_prompts(tokenizer, seq_len: int, n: int, seed: int) -> tuple[list[list[int]], list[str]]:
    """n prompts of exactly seq_len - ANSWER_TOKENS tokens, the key at depth (i + 0.5) / n, and the keys."""
    rng = random.Random(f"passkey/{seed}/{seq_len}")
    head = tokenizer.encode(INTRO, bos=True)
    question = tokenizer.encode(QUESTION)
    filler = tokenizer.encode(FILLER)
    prompts, keys = [], []
    for i in range(n):
        key = str(rng.randint(10000, 99999))
        needle = tokenizer.encode(NEEDLE.format(key=key))
        budget = seq_len - ANSWER_TOKENS - len(head) - len(needle) - len(question)
        if budget < 0:
            raise ValueError(f"passkey: seq_len {seq_len} is too short for the prompt")
        hay = (filler * (budget // len(filler) + 1))[:budget]
        cut = int(budget * (i + 0.5) / n)
        prompts.append(head + hay[:cut] + needle + hay[cut:] + question)
        keys.append(key)
    return prompts, keys


@torch.no_grad()
def greedy(model, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation of equal-length prompts with full forward passes (works on any wrapped model)."""
    device = next(model.parameters()).device
    tokens = torch.tensor(prompts, dtype=torch.long, device=device)
    out = []
    for _ in range(max_new_tokens):
        nxt = model(tokens)[:, -1].argmax(-1)
        out.append(nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
    return torch.stack(out, dim=1).tolist()


def passkey(model, tokenizer, seq_len: int, *, n: int, seed: int) -> float:
    """Fraction of the n keys that the model's greedy answer starts with."""
    prompts, keys = passkey_prompts(tokenizer, seq_len, n, seed)
    was_training = model.training
    model.eval()
    answers = greedy(model, prompts, ANSWER_TOKENS)
    model.train(was_training)
    hits = [tokenizer.decode(a).strip().startswith(k) for a, k in zip(answers, keys)]
    return sum(hits) / n


def resolve(spec: str) -> Callable:
    """passkey (this module's retrieval check) or any module:function with the same signature; the experiments'
    recipes name the paper's needle-in-a-haystack gate, eval.niah:gate (training does not import eval)."""
    if spec == "passkey":
        return passkey
    return import_function(spec)
