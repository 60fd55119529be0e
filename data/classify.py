"""Model-based classifier steps: quality, code, math (scores in doc.meta) and topic (sets doc.category, the
mix category). Each uses an n-gram linear model (data/classifier.py) loaded from `model`, or trained once per
run from labelled JSONL (`train`) into output/models/<step>.npz with its held-out precision and recall; or,
with `backend: transformer`, a local Hugging Face sequence-classification model (e.g. a DistilRoBERTa
quality classifier as in Llama 3) when such weights are available.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.base import Step, Task, applies, batched
from data.classifier import NgramClassifier, train_from_jsonl
from data.document import Document
from tools import atomic

POSITIVE_NAMES = ("1", "pos", "positive", "hq", "high", "good", "yes", "true", "code", "math")


@dataclass
class ClassifierStepConfig:
    model: str = ""  # a model file (.npz), or a Hugging Face model folder with backend: transformer
    train: str = ""  # labelled JSONL ({"text", "label"}) to train from when `model` is ""
    backend: str = "ngram"  # ngram | transformer
    positive: str = ""  # the label whose probability is the score ("" = a conventional name: 1, pos, hq, ...)
    threshold: float = 0.0  # drop documents scoring under it (0: annotate only)
    buckets: int = 1 << 18
    l2: float = 1e-4
    batch: int = 64
    languages: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)


@dataclass
class TopicConfig(ClassifierStepConfig):
    native_languages: list[str] = field(default_factory=lambda: ["en"])  # other languages: "multilingual"


class TransformerScorer:
    """A local Hugging Face sequence-classification model with the NgramClassifier prediction API."""

    def __init__(self, path: Path, max_length: int = 512):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"backend transformer needs a Hugging Face model folder (config.json, weights, tokenizer) at {path}"
            )
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
        id2label = self.model.config.id2label
        self.labels = [str(id2label[i]) for i in range(len(id2label))]
        self.max_length = max_length

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        with self.torch.no_grad():
            enc = self.tok(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            return self.torch.softmax(self.model(**enc).logits.float(), dim=-1).numpy()


class _Classify(Step):
    """Shared: find, train or load the model; score documents in batches; `decide` per document."""

    def model_path(self) -> Path:
        if self.cfg.model:
            return self.env.path(self.cfg.model)
        if self.cfg.train:
            return self.env.output / "models" / f"{self.name}.npz"
        raise ValueError(f"{self.name}: set {self.name}.model (a trained model) or {self.name}.train (labelled JSONL)")

    def prepare_run(self) -> None:
        path = self.model_path()
        if self.cfg.backend == "ngram" and not self.cfg.model and not path.exists():
            model, metrics = train_from_jsonl(self.env.path(self.cfg.train), self.cfg.buckets, self.cfg.l2)
            metrics["labelled"] = str(self.cfg.train)
            atomic.write_json(path.with_suffix(".metrics.json"), metrics)
            model.save(path)
        elif self.cfg.backend not in ("ngram", "transformer"):
            raise ValueError(f"{self.name}.backend must be ngram or transformer, got '{self.cfg.backend}'")

    def metrics(self) -> dict | None:
        path = self.model_path().with_suffix(".metrics.json")
        return json.loads(path.read_text()) if path.is_file() else None

    def setup(self) -> None:
        path = self.model_path()
        self.model = TransformerScorer(path) if self.cfg.backend == "transformer" else NgramClassifier.load(path)
        self.labels = list(self.model.labels)
        self.positive = self.positive_index()

    def positive_index(self) -> int | None:
        if self.cfg.positive:
            if self.cfg.positive not in self.labels:
                raise ValueError(
                    f"{self.name}.positive '{self.cfg.positive}' is not a label of the model {self.labels}"
                )
            return self.labels.index(self.cfg.positive)
        for name in POSITIVE_NAMES:
            if name in self.labels:
                return self.labels.index(name)
        return None

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        for batch in batched(docs, self.cfg.batch):
            yield from self.run_batch(batch, task)

    def run_batch(self, batch: list[Document], task: Task) -> Iterator[Document]:
        todo = [d for d in batch if applies(self.cfg, d)]
        probs = self.model.predict_proba([d.text for d in todo]) if todo else np.zeros((0, len(self.labels)))
        scores = {id(d): p for d, p in zip(todo, probs)}
        for doc in batch:
            p = scores.get(id(doc))
            verdict = self.decide(doc, p) if p is not None else None
            if verdict is None:
                yield doc
            else:
                task.drop(doc, self.name, *verdict)

    def score(self, p: np.ndarray) -> float:
        if self.positive is None:
            raise ValueError(
                f"{self.name}: cannot tell the positive label among {self.labels}; set {self.name}.positive"
            )
        return round(float(p[self.positive]), 6)

    def decide(self, doc: Document, p: np.ndarray) -> tuple[str, str] | None:
        s = self.score(p)
        doc.meta[self.name] = s
        if s < self.cfg.threshold:
            return f"{self.name} score under threshold", f"{s:.3f} < {self.cfg.threshold}"
        return None


class Quality(_Classify):
    name = "quality"


class CodeScore(_Classify):
    name = "code"


class MathScore(_Classify):
    name = "math"


class Topic(_Classify):
    """Assigns the mix category: "multilingual" outside `native_languages`, else the model's best label."""

    name = "topic"

    def run_batch(self, batch: list[Document], task: Task) -> Iterator[Document]:
        native = set(self.cfg.native_languages)
        st = task.step_stats(self.name)
        todo = [d for d in batch if d.lang in native or not native]
        probs = self.model.predict_proba([d.text for d in todo]) if todo else []
        for doc, p in zip(todo, probs):
            doc.category = self.labels[int(np.argmax(p))]
            doc.meta["topic"] = round(float(np.max(p)), 6)
        for doc in batch:
            if native and doc.lang not in native:
                doc.category = "multilingual"
            st.counters[f"category {doc.category}"] += 1
            yield doc
