"""Stand-in generators for NIAH tests: one that reads the needle from the prompt, ones that cannot."""

import random
import re

_QUESTION = re.compile(r"special magic (number|uuid)s? for (\S+) mentioned in the text above\?")


class Oracle:
    """Answers from the last `window` prompt tokens (all of them when None), like a model that retrieves perfectly
    within its attention span."""

    def __init__(self, tokenizer, window: int | None = None):
        self.tokenizer, self.window = tokenizer, window

    def __call__(self, prompts, *, max_new_tokens, stop_tokens=()):
        outs = []
        for p in prompts:
            text = self.tokenizer.decode(p if self.window is None else p[-self.window :])
            kind, key = _QUESTION.findall(text)[-1]
            values = re.findall(rf"special magic {kind}s for {re.escape(key)} is: (\S+)\.", text)
            answer = " " + (", ".join(values) if values else "unknown") + ".\n"
            outs.append(self.tokenizer.encode(answer)[:max_new_tokens])
        return outs


class Guesser:
    """Never looks at the prompt: a random 7-digit number."""

    def __init__(self, tokenizer, seed=0):
        self.tokenizer, self.rng = tokenizer, random.Random(seed)

    def __call__(self, prompts, *, max_new_tokens, stop_tokens=()):
        return [self.tokenizer.encode(f" {self.rng.randint(1_000_000, 9_999_999)}.")[:max_new_tokens] for _ in prompts]
