"""A fastText-style text classifier trained in-project: hashed word unigrams and bigrams -> a linear softmax.

fastText averages n-gram embeddings and applies a linear layer; without the low-rank bottleneck that is a
multinomial logistic regression on L2-normalised hashed n-gram counts, which is what this is. Training is
full-batch Adam on the L2-regularised cross-entropy, so it is deterministic. Labelled data is JSONL
with {"text": ..., "label": ...}; `train_from_jsonl` holds out a deterministic fifth of it (by text hash) and
reports precision and recall per label on it. Models are .npz files (no pickle).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data.textnorm import combine, unit_hash, word_hashes

_TOKEN = re.compile(r"\w+|[^\w\s]")
_DIGIT = re.compile(r"\d")


def tokens(text: str, max_tokens: int) -> list[str]:
    """Lower-cased words and single punctuation marks (which tell code and math apart), digits as 0."""
    return _TOKEN.findall(_DIGIT.sub("0", text[: 20 * max_tokens].lower()))[:max_tokens]


@functools.lru_cache(maxsize=256)
def _row(text: str, buckets: int, max_words: int) -> tuple[np.ndarray, np.ndarray]:
    """One text's (bucket indices, values). Cached: the topic, code and math steps classify the same documents
    one after the other (a batch of 64 apart), so each text is tokenised and hashed once."""
    h = word_hashes(tokens(text, max_words))
    feats = np.concatenate((h, combine(h[:-1], h[1:]))) % np.uint64(buckets) if len(h) else np.zeros(0, np.uint64)
    idx, counts = np.unique(feats.astype(np.int64), return_counts=True)
    vals = counts / np.sqrt((counts.astype(np.float64) ** 2).sum()) if len(counts) else counts.astype(np.float64)
    return idx, vals


def featurize(texts: Sequence[str], buckets: int, max_words: int = 2000):
    """Rows: L2-normalised counts of hashed token unigrams and bigrams (the first max_words tokens), as a scipy
    csr_matrix (scipy imported here: a pipeline without classifier steps does not pay its 0.4 s import)."""
    from scipy.sparse import csr_matrix

    rows = [_row(t, buckets, max_words) for t in texts]
    indptr = np.cumsum([0] + [len(idx) for idx, _ in rows])
    return csr_matrix(
        (
            np.concatenate([v for _, v in rows]) if rows else np.zeros(0),
            np.concatenate([i for i, _ in rows]) if rows else np.zeros(0, np.int64),
            indptr,
        ),
        shape=(len(texts), buckets),
    )


class NgramClassifier:
    def __init__(
        self, labels: Sequence[str], buckets: int = 1 << 18, w: np.ndarray | None = None, b: np.ndarray | None = None
    ):
        self.labels = list(labels)
        self.buckets = buckets
        self.w = w if w is not None else np.zeros((buckets, len(self.labels)), np.float32)
        self.b = b if b is not None else np.zeros(len(self.labels), np.float32)

    def fit(
        self, texts: Sequence[str], labels: Sequence[str], l2: float = 1e-4, steps: int = 150, lr: float = 0.2
    ) -> dict:
        """Full-batch Adam on the L2-regularised cross-entropy (deterministic; a few seconds for thousands of
        documents). Only buckets that occur in the training data get weights."""
        x = featurize(texts, self.buckets)
        y = np.array([self.labels.index(lab) for lab in labels])
        n, k = x.shape[0], len(self.labels)
        onehot = np.zeros((n, k))
        onehot[np.arange(n), y] = 1.0
        used = np.unique(x.indices)
        xu, xt = x[:, used].tocsr(), x[:, used].T.tocsr()
        w, b = np.zeros((len(used), k)), np.zeros(k)
        m = [np.zeros_like(w), np.zeros_like(b)]
        v = [np.zeros_like(w), np.zeros_like(b)]
        for t in range(1, steps + 1):
            z = xu @ w + b
            z -= z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            g = (np.exp(logp) - onehot) / n
            grads = [np.asarray(xt @ g) + l2 * w, g.sum(axis=0)]
            for p, gr, mi, vi in zip((w, b), grads, m, v):  # Adam (beta1 0.9, beta2 0.999)
                mi *= 0.9
                mi += 0.1 * gr
                vi *= 0.999
                vi += 0.001 * gr * gr
                p -= lr * (mi / (1 - 0.9**t)) / (np.sqrt(vi / (1 - 0.999**t)) + 1e-8)
        loss = float(-(onehot * logp).sum() / n + 0.5 * l2 * (w**2).sum())
        self.w[:] = 0
        self.w[used] = w
        self.b[:] = b
        return {"train_loss": loss, "steps": steps, "features_used": int(len(used))}

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        z = featurize(texts, self.buckets) @ self.w + self.b
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def save(self, path: str | Path) -> None:
        from data.base import save_arrays

        save_arrays(
            Path(path), w=self.w, b=self.b, labels=np.array(self.labels, dtype=str), buckets=np.array([self.buckets])
        )

    @classmethod
    def load(cls, path: str | Path) -> NgramClassifier:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"classifier model {path} does not exist")
        with np.load(path, allow_pickle=False) as z:
            return cls([str(s) for s in z["labels"]], int(z["buckets"][0]), z["w"], z["b"])


def read_labelled(path: str | Path, text_key: str = "text", label_key: str = "label") -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                texts.append(str(rec[text_key]))
                labels.append(str(rec[label_key]))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}:{i + 1}: expected a JSON object with '{text_key}' and '{label_key}': {e}"
                ) from None
    if len(set(labels)) < 2:
        raise ValueError(f"{path}: a classifier needs at least two labels, found {sorted(set(labels))}")
    return texts, labels


def precision_recall(truth: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict:
    out = {}
    for lab in labels:
        tp = sum(t == lab and p == lab for t, p in zip(truth, pred))
        fp = sum(t != lab and p == lab for t, p in zip(truth, pred))
        fn = sum(t == lab and p != lab for t, p in zip(truth, pred))
        out[lab] = {
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "support": tp + fn,
        }
    out["accuracy"] = sum(t == p for t, p in zip(truth, pred)) / max(len(truth), 1)
    return out


def train_from_jsonl(
    path: str | Path, buckets: int = 1 << 18, l2: float = 1e-4, holdout: float = 0.2, seed: int = 0
) -> tuple[NgramClassifier, dict]:
    """Train on the labelled JSONL minus a held-out part (chosen by text hash), evaluate on it, then return the
    model (trained on the training part only) and the held-out metrics."""
    texts, labels = read_labelled(path)
    held = [unit_hash(t, seed) < holdout for t in texts]
    train_x = [t for t, h in zip(texts, held) if not h]
    train_y = [y for y, h in zip(labels, held) if not h]
    test_x = [t for t, h in zip(texts, held) if h]
    test_y = [y for y, h in zip(labels, held) if h]
    model = NgramClassifier(sorted(set(labels)), buckets)
    info = model.fit(train_x, train_y, l2=l2)
    metrics = {"train": len(train_x), "heldout": len(test_x), **info}
    metrics["heldout_metrics"] = precision_recall(test_y, model.predict(test_x), model.labels) if test_x else {}
    return model, metrics
