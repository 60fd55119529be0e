"""The n-gram linear classifiers (held-out precision/recall on the generator's labelled sets) and the path for a
transformer classifier."""

import json

import numpy as np
import pytest

from data.base import Env, Task
from data.classifier import NgramClassifier, precision_recall, read_labelled, train_from_jsonl
from data.classify import ClassifierStepConfig, Quality, Topic, TopicConfig
from data.document import Document
from data.tests.helpers import corpus


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return corpus(tmp_path_factory.mktemp("lab") / "c", scale=0.05, format="jsonl") / "labelled"


@pytest.mark.parametrize("name", ["topic", "quality", "code", "math"])
def test_heldout_precision_and_recall(labelled, name):
    model, metrics = train_from_jsonl(labelled / f"{name}.jsonl")
    held = metrics["heldout_metrics"]
    assert metrics["heldout"] >= 100 and metrics["train"] >= 4 * metrics["heldout"] * 0.7
    for label in model.labels:
        assert held[label]["precision"] >= 0.95 and held[label]["recall"] >= 0.95, (label, held[label])


def test_model_round_trip_and_labels(labelled, tmp_path):
    texts, labels = read_labelled(labelled / "topic.jsonl")
    model = NgramClassifier(sorted(set(labels)), buckets=1 << 16)
    model.fit(texts[:300], labels[:300], steps=60)
    model.save(tmp_path / "m.npz")
    again = NgramClassifier.load(tmp_path / "m.npz")
    assert again.labels == ["code", "general", "math"]
    assert np.array_equal(model.predict_proba(texts[300:340]), again.predict_proba(texts[300:340]))
    assert precision_recall(["a", "b", "a"], ["a", "a", "a"], ["a", "b"])["a"] == {
        "precision": 2 / 3,
        "recall": 1.0,
        "support": 2,
    }
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_labelled(tmp_path / "bad.jsonl")


def test_steps_train_once_and_annotate(labelled, tmp_path):
    env = Env(output=tmp_path, work=tmp_path, tasks=[], cfg=None, extra={"cwd": str(tmp_path)})
    topic = Topic(TopicConfig(train=str(labelled / "topic.jsonl")), env)
    topic.prepare_run()
    assert (tmp_path / "models" / "topic.npz").exists() and topic.metrics()["heldout_metrics"]["code"]["recall"] > 0.9
    topic.setup()
    docs = [
        Document("a", "def f(x):\n    return x + 1\nfor item in items:\n    print(item)", lang="en"),
        Document("b", "Question: Tom has 3 apples and buys 5 more. How many? Answer: 3 + 5 = 8.", lang="en"),
        Document("c", "Toda persona tiene derecho a la libertad de opinión y de expresión.", lang="es"),
    ]
    out = list(topic(iter(docs), Task(0)))
    assert [d.category for d in out] == ["code", "math", "multilingual"]
    quality = Quality(ClassifierStepConfig(train=str(labelled / "quality.jsonl"), threshold=0.5), env)
    quality.prepare_run()
    quality.setup()
    spam = Document("s", " ".join(["cheap hotels paris best cheap hotels paris deals"] * 20), lang="en")
    prose = Document(
        "p",
        "The town council met on Tuesday to discuss the new library. Residents asked about opening "
        "hours, parking and the children's reading programme, and the council promised a decision "
        "before the end of the month after a public consultation.",
        lang="en",
    )
    task = Task(0)
    kept = list(quality(iter([prose, docs[1], spam]), task))
    assert [d.id for d in kept] == ["p", "b"] and 0.5 <= kept[0].meta["quality"] <= 1.0
    assert task.step_stats("quality").dropped == {"quality score under threshold": 1}


def test_transformer_backend_with_a_local_model(tmp_path):
    """The DistilRoBERTa-style path: any local sequence-classification folder (here a tiny random one)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", "the", "cat", "sat", "spam"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    cfg = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
        pad_token_id=0,
        id2label={0: "lq", 1: "hq"},
        label2id={"lq": 0, "hq": 1},
    )
    torch.manual_seed(0)
    RobertaForSequenceClassification(cfg).save_pretrained(tmp_path / "clf")
    fast.save_pretrained(tmp_path / "clf")
    env = Env(output=tmp_path, work=tmp_path, tasks=[], cfg=None, extra={"cwd": str(tmp_path)})
    step = Quality(ClassifierStepConfig(backend="transformer", model="clf"), env)
    step.prepare_run()
    step.setup()
    docs = [Document("a", "the cat sat"), Document("b", "spam spam spam")]
    out = list(step(iter(docs), Task(0)))
    scores = [d.meta["quality"] for d in out]
    assert len(out) == 2 and all(0.0 < s < 1.0 for s in scores) and scores[0] != scores[1]
    missing = Quality(ClassifierStepConfig(backend="transformer", model="nowhere"), env)
    with pytest.raises(FileNotFoundError, match="Hugging Face model folder"):
        missing.setup()
