"""SFT: loss mask positions in packed rows, drop-not-cut packing, source mixing, exact resume, and gradient
accumulation through the open loop equal to one big batch."""

import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.dialog import encode_dialog
from model.llama import build
from model.presets import preset
from training import distributed as D
from training.config import MonitorConfig, ParallelConfig, TrainConfig
from training.data import IGNORE
from training.loop import TrainLoop
from training.monitor import Monitor
from training.posttrain.sft import DialogBatches, SFTLoss, Source, collate_rows, mix, pack_dialogs
from training.sample_shards import byte_tokenizer

TOK = byte_tokenizer()  # the 256 bytes + the Llama 3 special tokens (chat format included), vocab 512


def tiny_model(seed: int = 0):
    args = preset("tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=TOK.vocab_size,
                  max_seq_len=256)  # fmt: skip
    return build(args, seed=seed)


def make_loop(model, batches, loss_fn, optimizer, workdir, lr=1.0):
    cfg = TrainConfig()
    cfg.optim.grad_clip = 0.0
    monitor = Monitor(workdir, MonitorConfig(wandb=False, progress=False), True, "sft")
    return TrainLoop(model, batches, loss_fn, optimizer, lambda step: lr, cfg, phase="sft", workdir=workdir,
                     info=D.DistInfo(), parallel=ParallelConfig(), monitor=monitor)  # fmt: skip


def random_dialogs(n: int, seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)

    def words(k):
        return " ".join(rng.choice(["cat", "dog", "sun", "tea", "red", "blue", "seven"]) for _ in range(k))

    out = []
    for _ in range(n):
        d = [{"role": "system", "content": "Be kind."}] if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 2)):
            d += [{"role": "user", "content": words(rng.randint(1, 4))},
                  {"role": "assistant", "content": words(rng.randint(1, 5))}]  # fmt: skip
        out.append(d)
    return out


DIALOG = [
    {"role": "system", "content": "Answer in digits."},
    {"role": "user", "content": "two plus two"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "times ten"},
    {"role": "assistant", "content": "40"},
]


def test_targets_are_the_assistant_tokens_of_each_packed_dialog():
    second = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    encoded = [encode_dialog(TOK, DIALOG), encode_dialog(TOK, second)]
    packed = pack_dialogs(encoded, seq_len=160, pad_id=TOK.pad_id)
    assert len(packed.rows) == 1 and packed.dropped == {}
    row = packed.rows[0]
    n1, n2 = len(encoded[0][0]), len(encoded[1][0])
    assert (
        (row.doc_ids[:n1] == 0).all() and (row.doc_ids[n1 : n1 + n2] == 1).all() and (row.doc_ids[n1 + n2 :] == 2).all()
    )
    assert (row.tokens[n1 + n2 :] == TOK.pad_id).all() and (row.targets[n1 + n2 - 1 :] == IGNORE).all()
    # Position t is trained on token t + 1 exactly where the dialog mask of t + 1 is True.
    trained = [int(t) for t in row.targets if t != IGNORE]
    assert TOK.decode(trained) == "4<|eot_id|>40<|eot_id|>hello<|eot_id|>"
    where = np.flatnonzero(row.targets != IGNORE)
    assert (row.targets[where] == row.tokens[where + 1]).all()
    assert row.targets[n1 - 1] == IGNORE  # the last token of a dialog predicts nothing (the next dialog's bos)
    # The loss is the mean cross-entropy over exactly those targets, and dialogs do not see each other.
    model = tiny_model()
    batch = collate_rows(packed.rows)
    s, n = SFTLoss()(model, batch)
    assert int(n) == len(trained) == 2 + 3 + 6  # "4", "40", "hello", each with its eot
    with torch.no_grad():
        logits = model(batch.tokens, batch.doc_ids)[0]
    where_t = torch.from_numpy(where)
    expected = F.cross_entropy(logits[where_t], torch.from_numpy(row.targets[where]), reduction="sum")
    torch.testing.assert_close(s.detach(), expected)
    alone = collate_rows(pack_dialogs(encoded[1:], seq_len=n2).rows)
    with torch.no_grad():
        packed_logits = model(batch.tokens, batch.doc_ids)[0, n1 : n1 + n2]
        torch.testing.assert_close(packed_logits, model(alone.tokens, alone.doc_ids)[0], atol=1e-5, rtol=1e-5)


def test_over_long_dialogs_are_dropped_whole_and_counted():
    encoded = [encode_dialog(TOK, d) for d in random_dialogs(30, seed=1)]
    seq_len = 60
    too_long = sum(len(ids) > seq_len for ids, _ in encoded)
    assert 0 < too_long < 30
    packed = pack_dialogs(encoded, seq_len, pad_id=TOK.pad_id)
    assert packed.dropped == {f"longer than seq_len {seq_len}": too_long}
    # Every kept dialog is in the rows whole, in order: its tokens, back to back, per document id.
    kept = [ids for ids, _ in encoded if len(ids) <= seq_len]
    found = []
    for row in packed.rows:
        for d in range(int(row.doc_ids.max())):
            found.append(row.tokens[row.doc_ids == d].tolist())
        assert row.doc_ids.max() == (row.tokens == TOK.bos_id).sum()  # the last id is the padding
    assert found == kept


def test_mix_repeats_and_downsamples_per_source():
    a, b = [f"a{i}" for i in range(10)], [f"b{i}" for i in range(20)]
    items, counts = mix([Source("gold", a, epochs=3), Source("bulk", b, epochs=0.5), Source("x", a, epochs=1.5)])
    assert counts == {"gold": 30, "bulk": 10, "x": 15}
    assert len(items) == 55
    bulk = [x for x in items if x.startswith("b")]
    assert len(set(bulk)) == 10  # a down-sample without repeats
    assert all(items.count(x) in (4, 5) for x in a)  # 3 (gold) + 1 or 2 (x: all once, a seeded half twice)
    assert mix([Source("gold", a, 3), Source("bulk", b, 0.5)], seed=0) == mix(
        [Source("gold", a, 3), Source("bulk", b, 0.5)]
    )
    assert mix([Source("bulk", b, 0.5)], seed=1) != mix([Source("bulk", b, 0.5)], seed=2)
    with pytest.raises(ValueError, match="source 'bad': epochs"):
        mix([Source("bad", a, -1)])


@dataclass(frozen=True)
class Item:
    i: int
    n_tokens: int = 10


def test_batches_cover_each_epoch_and_resume_exactly():
    rows = [Item(i) for i in range(7)]

    def ids(step_batch):
        return [x.i for mb in step_batch.micro for x in mb]

    src = DialogBatches(rows, list, per_step=4, micro=2, seed=3)
    steps = [src.next_batch(s, 0) for s in range(7)]  # 28 items = 4 epochs of 7
    assert all(b.tokens == 40 and len(b.micro) == 2 for b in steps)
    flat = [i for b in steps for i in ids(b)]
    for e in range(4):
        assert sorted(flat[7 * e : 7 * e + 7]) == list(range(7))
    assert flat[:7] != flat[7:14]  # a new order each epoch
    again = DialogBatches(rows, list, per_step=4, micro=2, seed=3)
    for s in range(3):
        again.next_batch(s, 0)
    state = again.state_dict()
    resumed = DialogBatches(rows, list, per_step=4, micro=2, seed=3)
    resumed.load_state_dict(state)
    assert [ids(resumed.next_batch(s, 0)) for s in range(3, 7)] == [ids(b) for b in steps[3:]]
    with pytest.raises(ValueError, match="had 7 items"):
        DialogBatches(rows[:5], list, per_step=4).load_state_dict(state)
    with pytest.raises(ValueError, match="not a multiple"):
        DialogBatches(rows, list, per_step=4, micro=3)


def test_accumulation_equals_one_big_batch(tmp_path):
    torch.set_num_threads(1)
    encoded = [encode_dialog(TOK, d) for d in random_dialogs(40)]
    rows = pack_dialogs(encoded, seq_len=96, pad_id=TOK.pad_id).rows
    assert len(rows) >= 8
    weights = []
    for micro in (8, 1):
        model = tiny_model()
        batches = DialogBatches(rows, collate_rows, per_step=8, micro=micro, seed=0)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)  # w - g: the update is the gradient itself
        loop = make_loop(model, batches, SFTLoss(), opt, tmp_path / f"m{micro}")
        record = loop.train_step()
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], atol=1e-6, rtol=1e-5)
    # Both equal one big batch: the mean cross-entropy over all trained tokens of the 8 rows.
    model = tiny_model()
    big = collate_rows([r for mb in DialogBatches(rows, list, per_step=8, seed=0).next_batch(0, 0).micro for r in mb])
    per_row = (big.targets != IGNORE).sum(1)
    assert len(set(per_row.tolist())) > 1  # rows differ in trained tokens: a mean of row means would differ
    loss = F.cross_entropy(model(big.tokens, big.doc_ids).flatten(0, 1), big.targets.flatten(), ignore_index=IGNORE)
    loss.backward()
    assert record["loss"] == pytest.approx(loss.item(), rel=1e-6) and record["targets"] == int(per_row.sum())
    for k, p in model.named_parameters():
        torch.testing.assert_close(weights[1][k], p.detach() - p.grad, atol=1e-6, rtol=1e-5)
