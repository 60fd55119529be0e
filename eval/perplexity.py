"""Short-context evaluation: validation loss and perplexity per data category, from held-out shards.

Each category's split (default "valid") is read as one token stream per shard and cut into windows of seq_len + 1
tokens that overlap by one (inputs w[:-1], targets w[1:]), so every token but a shard's first is a target once.
Documents come from the shard index: the model sees doc_ids (attention never crosses a document, positions restart)
and a target that starts a new document is not scored (nothing before it in its document predicts it), so the
number of scored tokens is tokens - documents. Loss is the mean negative log-likelihood in nats per scored token;
perplexity = exp(loss). The output head runs on chunks of positions so [tokens, vocab] logits never exist at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from data.shards import ShardSet


@dataclass
class PerplexityConfig:
    shards: str = ""  # a shard set directory (data.shards); required for the ppl task
    split: str = "valid"
    categories: list[str] = field(default_factory=list)  # empty = every category that has the split
    seq_len: int = 1024
    batch_size: int = 4
    max_tokens: int = 0  # per category; 0 = all


def windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(window tokens [<= seq_len + 1], document id per token) for one shard, in order."""
    doc = np.searchsorted(offsets, np.arange(len(tokens)), side="right") - 1
    for start in range(0, max(len(tokens) - 1, 0), seq_len):
        stop = min(start + seq_len + 1, len(tokens))
        yield np.asarray(tokens[start:stop], dtype=np.int64), doc[start:stop]


def _batch(chunks: list[tuple[np.ndarray, np.ndarray]], seq_len: int):
    """Pad windows to seq_len + 1; padded targets are masked and padded inputs get their own document id."""
    B = len(chunks)
    tok = torch.zeros(B, seq_len + 1, dtype=torch.long)
    doc = torch.full((B, seq_len + 1), -1, dtype=torch.long)
    for b, (t, d) in enumerate(chunks):
        tok[b, : len(t)] = torch.from_numpy(t)
        doc[b, : len(d)] = torch.from_numpy(d)
    inputs, targets = tok[:, :-1], tok[:, 1:]
    # A target is scored when it continues the document of the token before it (padding has doc -1 twice, so
    # exclude it explicitly).
    scored = (doc[:, 1:] == doc[:, :-1]) & (doc[:, 1:] >= 0)
    return inputs, doc[:, :-1], targets, scored


def token_nll(model, h: torch.Tensor, targets: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """NLL (nats, fp32) of each target [N] given its final hidden state [N, dim], the output head run on
    `chunk` positions at a time."""
    out = torch.empty(len(targets), dtype=torch.float32, device=h.device)
    for i in range(0, len(targets), chunk):
        logits = model.output(h[i : i + chunk]).float()
        out[i : i + chunk] = F.cross_entropy(logits, targets[i : i + chunk], reduction="none")
    return out


@torch.inference_mode()
def nll_sum(model, inputs, doc_ids, targets, scored, chunk: int = 1024) -> tuple[float, int]:
    """Summed NLL (nats) over scored targets, and their count."""
    device = model.tok_embeddings.weight.device
    inputs, doc_ids, targets, scored = (x.to(device) for x in (inputs, doc_ids, targets, scored))
    h = model.hidden(inputs, doc_ids)  # [B, T, dim]
    h, targets, scored = h.reshape(-1, h.shape[-1]), targets.reshape(-1), scored.reshape(-1)
    return float(token_nll(model, h[scored], targets[scored], chunk).double().sum()), int(scored.sum())


@torch.inference_mode()
def loss_by_position(model, windows: torch.Tensor, edges: list[int], batch_size: int = 4) -> list[float]:
    """Mean NLL (nats) of the targets at positions [edges[i], edges[i + 1]) of each window, one value per bin.

    `windows` is [B, L + 1] tokens of single documents (no masking): inputs w[:-1] at positions 0..L-1, targets
    w[1:]. Binning by position shows what a model makes of context past the length it was trained at (the
    long-context stages' purpose), e.g. edges [0, 256, 1024] for a model pre-trained at 256 tokens.
    """
    if not (edges[0] >= 0 and edges[-1] <= windows.shape[1] - 1 and all(a < b for a, b in zip(edges, edges[1:]))):
        raise ValueError(f"edges {edges} must rise within 0..{windows.shape[1] - 1}")
    device = model.tok_embeddings.weight.device
    sums = torch.zeros(windows.shape[1] - 1, dtype=torch.float64)
    for i in range(0, len(windows), batch_size):
        w = windows[i : i + batch_size].to(device)
        h = model.hidden(w[:, :-1])  # [b, L, dim]
        nll = token_nll(model, h.reshape(-1, h.shape[-1]), w[:, 1:].reshape(-1)).view(len(w), -1)  # [b, L]
        sums += nll.sum(0).double().cpu()
    return [float(sums[a:b].sum() / ((b - a) * len(windows))) for a, b in zip(edges, edges[1:])]


def _category(model, shards: ShardSet, entries, cfg: PerplexityConfig, label: str, progress: bool) -> dict:
    nll, n, n_windows, docs = 0.0, 0, 0, 0
    pending: list = []
    budget = cfg.max_tokens or math.inf
    with tqdm(desc=f"ppl {label}", unit="tok", disable=not progress) as bar:
        for entry in entries:
            if n_windows * cfg.seq_len >= budget:
                break
            offsets = shards.offsets(entry)
            docs += len(offsets) - 1
            for w in windows(shards.tokens(entry), offsets, cfg.seq_len):
                if n_windows * cfg.seq_len >= budget:
                    break
                pending.append(w)
                n_windows += 1
                if len(pending) == cfg.batch_size or n_windows * cfg.seq_len >= budget:
                    s, c = nll_sum(model, *_batch(pending, cfg.seq_len))
                    nll, n = nll + s, n + c
                    bar.update(sum(len(t) - 1 for t, _ in pending))
                    pending.clear()
        if pending:
            s, c = nll_sum(model, *_batch(pending, cfg.seq_len))
            nll, n = nll + s, n + c
    loss = nll / n if n else float("nan")
    # "documents": in the shards read (a token budget may stop inside the last one).
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": n, "documents": docs, "windows": n_windows}


def evaluate(model, cfg: PerplexityConfig, shards: ShardSet | None = None, progress: bool = True) -> dict:
    """{category: {"loss", "perplexity", "tokens", "documents", "windows"}, "all": token-weighted over categories}."""
    shards = shards or ShardSet(cfg.shards)
    cats = cfg.categories or [c for c in shards.categories if shards.select(category=c, split=cfg.split)]
    if not cats:
        raise ValueError(f"shard set {shards.root} has no '{cfg.split}' shards")
    results: dict[str, dict] = {}
    for cat in cats:
        entries = shards.select(category=cat, split=cfg.split)
        if not entries:
            raise ValueError(f"shard set {shards.root} has no '{cfg.split}' shards of category '{cat}'")
        results[cat] = _category(model, shards, entries, cfg, cat, progress)
    total_n = sum(r["tokens"] for r in results.values())
    all_loss = sum(r["loss"] * r["tokens"] for r in results.values()) / total_n if total_n else float("nan")
    results["all"] = {"loss": all_loss, "perplexity": math.exp(all_loss), "tokens": total_n}
    return results
