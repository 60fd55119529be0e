"""Tokenization: documents -> token ids with the model's tokenizer (any object with the
model.tokenizer.Tokenizer API: encode_batch(texts, bos=, eos=), bos_id, eos_id, vocab_size).

Each document is packed as <|begin_of_text|> text <|end_of_text|> (Llama 3). Token counts are kept exactly:
per language and per category in the step's counters, and in the shard manifests written by `shards`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from data.base import Step, Task, batched
from data.document import Document


@dataclass
class TokenizeConfig:
    tokenizer: str = "llama3"  # llama3 (the official ranks in llama-models) | a tokenizer folder (Tokenizer.save)
    bos: bool = True
    eos: bool = True
    batch: int = 64
    threads: int = 1  # encode_batch threads


def load_tokenizer(cfg: TokenizeConfig, env: Any) -> Any:
    if env.tokenizer is not None:
        return env.tokenizer
    from model.bpe import tokenizer_from_spec

    return tokenizer_from_spec(cfg.tokenizer if cfg.tokenizer == "llama3" else env.path(cfg.tokenizer))


class Tokenize(Step):
    name = "tokenize"

    def setup(self) -> None:
        self.tok = load_tokenizer(self.cfg, self.env)

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        for batch in batched(docs, self.cfg.batch):
            yield from self.run_batch(batch, task)

    def run_batch(self, batch: list[Document], task: Task) -> Iterator[Document]:
        st = task.step_stats(self.name)
        ids = self.tok.encode_batch(
            [d.text for d in batch], bos=self.cfg.bos, eos=self.cfg.eos, num_threads=self.cfg.threads
        )
        specials = int(self.cfg.bos) + int(self.cfg.eos)
        for doc, toks in zip(batch, ids):
            if len(toks) <= specials:
                task.drop(doc, self.name, "no tokens")
                continue
            doc.tokens = np.asarray(toks, dtype=np.uint32)
            n = len(toks)
            st.counters["tokens"] += n
            st.counters["tokenized chars"] += len(doc.text)
            st.counters[f"tokens lang={doc.lang or 'unknown'}"] += n
            st.counters[f"tokens category={doc.category or 'general'}"] += n
            yield doc
