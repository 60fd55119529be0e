"""The trainer core: global-token loss normalisation under accumulation, losses, spikes, weight decay groups."""

from __future__ import annotations

import json

import pytest
import torch

from training import checkpoint as ckpt
from training.data import Batch
from training.loop import SpikeError
from training.losses import chunked_cross_entropy
from training.monitor import read_metrics, step_records
from training.tests.helpers import micro_recipe, text_shards
from training.trainer import Trainer


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return text_shards(tmp_path_factory.mktemp("shards"))


def trainer(recipe, workdir, shards, **kw) -> Trainer:
    return Trainer(recipe, recipe.pretrain, workdir, shards, phase="pretrain", **kw)


def curve(workdir) -> list[float]:
    return [r["loss"] for r in step_records(workdir / "metrics.jsonl")]


def test_accumulation_is_normalised_by_the_global_target_count(shards, tmp_path):
    # 8 rows of 32: all at once, or one row per micro-batch. Rows hold different numbers of targets
    # (document ends are masked), so averaging micro-batch means would differ; the token-normalised sum does not.
    whole = trainer(micro_recipe(), tmp_path / "whole", shards)
    whole.fit(until_tokens=1280)
    acc = trainer(micro_recipe("pretrain.micro_batch_rows=1"), tmp_path / "acc", shards)
    acc.fit(until_tokens=1280)
    a, b = curve(tmp_path / "whole"), curve(tmp_path / "acc")
    assert len(a) == 5 and a == pytest.approx(b, abs=1e-6)
    for (k, v), (_, w) in zip(whole.model.state_dict().items(), acc.model.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-5), k
    targets = [r["targets"] for r in step_records(tmp_path / "whole" / "metrics.jsonl")]
    assert min(targets) < 8 * 32  # some targets were masked at document ends
    assert a[-1] < a[0]  # it learns


def test_chunked_loss_equals_cross_entropy():
    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    t[::5] = -100
    ref = torch.nn.functional.cross_entropy(h @ w.t(), t, ignore_index=-100, reduction="sum")
    got = chunked_cross_entropy(h, w, t, chunk=8)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    g_ref = torch.autograd.grad(ref, (h, w))
    g_got = torch.autograd.grad(got, (h, w))
    for a, b in zip(g_ref, g_got):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        ["pretrain.loss=chunked"],
        ["parallel.activation_checkpointing=full"],
        ["parallel.activation_checkpointing=selective", "parallel.ac_every=2"],
        # Traced by dynamo per block (aot_eager: no C++ compilation, so the test stays fast).
        ["parallel.compile=true", "parallel.compile_backend=aot_eager", "parallel.activation_checkpointing=full"],
    ],
)
def test_losses_checkpointing_and_compile_leave_the_curve_unchanged(shards, tmp_path, options):
    ref = trainer(micro_recipe(), tmp_path / "ref", shards)
    ref.fit(until_tokens=768)
    other = trainer(micro_recipe(*options), tmp_path / "other", shards)
    other.fit(until_tokens=768)
    assert curve(tmp_path / "ref") == pytest.approx(curve(tmp_path / "other"), abs=1e-5)
    # Wrappers never leak into checkpoints or exports: Meta's parameter names only.
    names = set(ckpt.app_state(other.model, None)["model"])
    assert names == set(ref.model.state_dict())
    assert not any("_checkpoint_wrapped" in n or "_orig_mod" in n for n in names)


def inject_spikes(trainer: Trainer):
    """Make the loader's batches targets of a special token never seen in training (a loss spike);
    returns the original next_batch."""
    real = trainer.loader.next_batch

    def bad(*args, **kwargs):
        good = real(*args, **kwargs)
        return Batch(good.tokens, torch.full_like(good.targets, 500), good.doc_ids)

    trainer.loader.next_batch = bad
    return real


# Without the multilingual category (whose non-Latin bytes are real 2x loss jumps for this micro model).
SPIKY = (
    "pretrain.spike.factor=1.5",
    "pretrain.spike.warmup_steps=3",
    "pretrain.spike.ema=0.5",
    "pretrain.data.mix.multilingual=0",
    "pretrain.tokens=8192",
)


def test_a_spike_is_skipped_and_logged(shards, tmp_path):
    t = trainer(micro_recipe(*SPIKY), tmp_path, shards)
    t.fit(until_tokens=4096)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    step, position = t.step, t.loader.batches
    inject_spikes(t)
    record = t.train_step()
    assert record["loss"] > 1.5 * t.spike["mean"]
    assert t.step == step + 1 and t.loader.batches == position + 1  # the batch is consumed ...
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())  # ... the update dropped
    events = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("event") == "spike"]
    assert len(events) == 1 and events[0]["action"] == "skip" and events[0]["step"] == step
    # Spikes in a row beyond max_events fail loudly.
    t.cfg.spike.max_events = 2
    with pytest.raises(SpikeError, match="3 loss spikes in a row"):
        t.train_step()
        t.train_step()


def test_a_spike_rolls_back_to_the_last_checkpoint_and_moves_past_the_data(shards, tmp_path):
    t = trainer(micro_recipe(*SPIKY, "pretrain.spike.action=rollback"), tmp_path, shards)
    t.fit(until_tokens=4096)  # 16 steps: the last checkpoint is at step 16
    t.train_step()  # step 17, not checkpointed
    saved = ckpt.latest_complete(tmp_path / "checkpoints")[0]
    assert saved.name == "step_00000016"
    position = t.loader.batches
    inject_spikes(t)
    t.train_step()
    assert t.step == 16 and t.tokens == 16 * 256  # weights, optimizer, step and tokens from step 8 ...
    assert t.loader.batches == position + 1  # ... but the data stays past the bad batch
    weights = {k: v.clone() for k, v in t.model.state_dict().items()}
    ckpt.Checkpointer(tmp_path / "checkpoints", t.info).load(saved, t.model, None, rng=False)
    assert all(torch.equal(weights[k], v) for k, v in t.model.state_dict().items())
    events = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("event") == "rollback"]
    assert len(events) == 1 and events[0]["to_step"] == 16 and events[0]["checkpoint"] == saved.name
    assert all(r["step"] <= 16 for r in step_records(tmp_path / "metrics.jsonl"))


def test_non_finite_losses_are_spikes_even_without_a_factor(shards, tmp_path):
    t = trainer(micro_recipe(), tmp_path, shards)
    good = t.loader.next_batch(8, 32)
    t.loader.next_batch = lambda *a, **k: Batch(good.tokens, good.targets, good.doc_ids)
    with torch.no_grad():
        t.model.output.weight.fill_(float("nan"))
    t.train_step()
    assert t.spike["events"] == 1 and t.step == 1
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["event"] == "spike"


def test_no_weight_decay_on_norms_and_embeddings(shards, tmp_path):
    t = trainer(micro_recipe(), tmp_path, shards)
    decay, no_decay = t.optimizer.param_groups
    names = {id(p): n for n, p in t.model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} == {
        "tok_embeddings.weight", "norm.weight",
        *(f"layers.{i}.{n}.weight" for i in range(2) for n in ("attention_norm", "ffn_norm")),
    }  # fmt: skip
    both = trainer(micro_recipe("pretrain.optim.decay_norms_and_embeddings=true"), tmp_path / "b", shards)
    assert len(both.optimizer.param_groups[1]["params"]) == 0
