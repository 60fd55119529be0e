"""The reward model: Bradley-Terry by hand, rewards read at an explicit index (pad == eot), the strength filter, and
a tiny reward model learning a planted preference through the open loop."""

import math
import random

import pytest
import torch

from data.dialogs import Preference
from model.llama import build
from model.presets import preset
from training import distributed as D
from training.config import MonitorConfig, ParallelConfig, TrainConfig
from training.loop import TrainLoop
from training.monitor import Monitor
from training.posttrain.reward import (
    RewardLoss,
    RewardModel,
    collate_ranked,
    encode_ranked,
    filter_strength,
    pairwise_accuracy,
    ranking_loss,
)
from training.posttrain.sft import DialogBatches
from training.sample_shards import byte_tokenizer

TOK = byte_tokenizer()
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}]


def tiny_rm(seed=0):
    args = preset("tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=TOK.vocab_size,
                  max_seq_len=256)  # fmt: skip
    torch.manual_seed(seed)
    return RewardModel(build(args, seed=seed))


def test_bradley_terry_value_and_gradient_by_hand():
    r = torch.tensor([1.0, 0.5, -1.0], requires_grad=True)  # best first
    loss = ranking_loss(r)

    def sig(x):
        return 1.0 / (1.0 + math.exp(-x))

    # Pairs (0,1), (0,2), (1,2) with differences 0.5, 2.0, 1.5.
    assert loss.item() == pytest.approx(-(math.log(sig(0.5)) + math.log(sig(2.0)) + math.log(sig(1.5))), abs=1e-6)
    loss.backward()
    # d/dr_i of -log sigmoid(r_i - r_j) = -sigmoid(r_j - r_i); d/dr_j = +sigmoid(r_j - r_i).
    expected = [-sig(-0.5) - sig(-2.0), sig(-0.5) - sig(-1.5), sig(-2.0) + sig(-1.5)]
    assert r.grad.tolist() == pytest.approx(expected, abs=1e-6)
    # The loss_fn over a batch of one three-response prompt is the same sum, over its 3 pairs.
    rm = tiny_rm()
    pref = Preference(PROMPT, "Blue.", "Dog.", "Blue, like the sky.", "better")
    batch = collate_ranked([encode_ranked(TOK, pref)], TOK.pad_id)
    total, n = RewardLoss()(rm, batch)
    assert n == 3
    with torch.no_grad():
        rewards = rm(batch.tokens, batch.doc_ids, batch.last_index)
    assert total.item() == pytest.approx(ranking_loss(rewards).item(), abs=1e-6)


def test_reward_is_read_at_the_last_index_even_when_pad_is_eot():
    rm = tiny_rm().eval()
    with torch.no_grad():
        rm.head.weight.mul_(1000.0)  # at initialisation the rewards differ by ~1e-3: make the differences visible
    prefs = [Preference(PROMPT, "Blue.", "I am not sure which one.", None, "better"),
             Preference(PROMPT[1:], "A long answer about red and green.", "No.", None, "better")]  # fmt: skip
    groups = [encode_ranked(TOK, p) for p in prefs]
    batch = collate_ranked(groups, pad_id=TOK.eot_id)  # padding made of the very token each sequence ends with
    seqs = [s for g in groups for s in g.seqs]
    assert all(s[-1] == TOK.eot_id for s in seqs) and (batch.tokens == TOK.eot_id).sum() > sum(map(len, seqs)) // 8
    with torch.no_grad():
        got = rm(batch.tokens, batch.doc_ids, batch.last_index)
        alone = [rm(torch.tensor([s]), None, torch.tensor([len(s) - 1])).item() for s in seqs]
        # What a search for the first <|eot_id|> would read: the end of the prompt's first turn.
        first_eot = torch.tensor([s.index(TOK.eot_id) for s in seqs])
        wrong = rm(batch.tokens, batch.doc_ids, first_eot)
    assert got.tolist() == pytest.approx(alone, rel=1e-4)
    assert (wrong - got).abs().min() > 0.1
    assert batch.better.tolist() == [0, 2] and batch.worse.tolist() == [1, 3]


def test_strength_filter_keeps_the_two_strongest_levels():
    strengths = ["significantly_better", "better", "slightly_better", "marginally_better", "better", "slightly_better"]
    prefs = [Preference(PROMPT, "a", "b", None, s) for s in strengths]
    kept, dropped = filter_strength(prefs)
    assert [p.strength for p in kept] == ["significantly_better", "better", "better"]
    assert dropped == {"slightly_better": 2, "marginally_better": 1}


def synthetic_preferences(n: int, seed: int) -> list[Preference]:
    """Chosen responses contain the word "zebra", rejected ones do not; otherwise random words. The weak ratings
    (every third record) carry the opposite preference, as noise that the strength filter removes."""
    rng = random.Random(seed)
    words = ["cat", "dog", "sun", "tea", "red", "sky", "map", "pen", "box", "cup"]

    def text(planted: bool) -> str:
        w = [rng.choice(words) for _ in range(rng.randint(2, 5))]
        if planted:
            w.insert(rng.randint(0, len(w)), "zebra")
        return " ".join(w) + "."

    out = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Say something about {rng.choice(words)}."}]
        strength = ["significantly_better", "better", "slightly_better"][i % 3]
        good, bad = text(True), text(False)
        chosen, rejected = (good, bad) if strength != "slightly_better" else (bad, good)
        out.append(Preference(prompt, chosen, rejected, None, strength))
    return out


def test_tiny_reward_model_learns_a_planted_preference(tmp_path):
    torch.set_num_threads(1)
    train, dropped = filter_strength(synthetic_preferences(96, seed=0))
    held_out, _ = filter_strength(synthetic_preferences(60, seed=1))
    assert dropped == {"slightly_better": 32} and len(held_out) == 40
    rm = tiny_rm()

    def collate(items):
        return collate_ranked(items, TOK.pad_id)

    test_batches = [collate([encode_ranked(TOK, p) for p in held_out])]
    before = pairwise_accuracy(rm, test_batches)
    batches = DialogBatches([encode_ranked(TOK, p) for p in train], collate, per_step=16, micro=8, seed=0)
    monitor = Monitor(tmp_path, MonitorConfig(wandb=False, progress=False), True, "rm")
    params = [p for p in rm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    loop = TrainLoop(rm, batches, RewardLoss(), opt, lambda step: 3e-3, TrainConfig(), phase="rm", workdir=tmp_path,
                     info=D.DistInfo(), parallel=ParallelConfig(), monitor=monitor)  # fmt: skip
    losses = [loop.train_step()["loss"] for _ in range(40)]
    after = pairwise_accuracy(rm, test_batches)
    assert after > 0.8, (before, after, losses[::5])
    assert sum(losses[-5:]) < sum(losses[:5])
    assert rm.backbone.output.weight.grad is None  # the LM head takes no part
