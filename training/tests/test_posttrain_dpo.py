"""DPO: the loss against a hand computation, its gradient, the formatting-token mask, the token-averaged NLL term,
reference log-probs computed once equal to on-the-fly ones, a few loop steps widening the margin, and loss and
gradient by hand with the pad id equal to the end id."""

import math

import pytest
import torch

from model.dialog import format_token_mask
from model.llama import build
from model.presets import preset
from training import distributed as D
from training.config import MonitorConfig, ParallelConfig, TrainConfig
from training.loop import TrainLoop
from training.monitor import Monitor
from training.posttrain.dpo import (
    DPOLoss,
    Pair,
    collate_pairs,
    dpo_loss,
    encode_pair,
    reference_logps,
    sequence_logps,
)
from training.posttrain.sft import DialogBatches
from training.sample_shards import byte_tokenizer

TOK = byte_tokenizer()
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}]


def tiny_model(seed=0):
    args = preset("tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=TOK.vocab_size,
                  max_seq_len=256)  # fmt: skip
    return build(args, seed=seed)


def pairs():
    return [
        encode_pair(TOK, PROMPT, "Blue.", "I cannot say."),
        encode_pair(TOK, PROMPT[1:], "Red, like a rose.", "Dog."),
        encode_pair(TOK, [{"role": "user", "content": "2+2?"}], "4", "Five, I think."),
    ]


def test_dpo_loss_from_logits_matches_a_hand_computation():
    # Two pairs, vocabulary 3, sequences of 3 tokens; the response is the last two tokens of each sequence.
    logits = torch.tensor(
        [
            [[2.0, 0.0, 1.0], [0.5, 1.5, -1.0], [0.0, 0.0, 0.0]],  # chosen, pair 0
            [[0.0, 1.0, 3.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]],  # chosen, pair 1
            [[1.0, 1.0, 0.0], [-2.0, 0.0, 2.0], [0.0, 0.0, 0.0]],  # rejected, pair 0
            [[0.0, 2.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 0.0]],  # rejected, pair 1
        ]
    )
    tokens = torch.tensor([[0, 1, 2], [0, 2, 0], [0, 0, 1], [0, 1, 0]])
    mask = torch.tensor([[False, True, True]] * 4)
    logps = sequence_logps(lambda t, d: logits, tokens, torch.zeros_like(tokens), mask)

    def log_softmax(row, k):  # written out: log(exp(row[k]) / sum(exp(row)))
        return row[k] - math.log(sum(math.exp(x) for x in row))

    hand = [sum(log_softmax(logits[b, t - 1].tolist(), int(tokens[b, t])) for t in (1, 2)) for b in range(4)]
    assert logps.tolist() == pytest.approx(hand, abs=1e-6)
    ref = [-2.5, -1.0, -3.0, -0.5]
    beta = 0.1
    expected = 0.0
    for i in range(2):
        z = beta * ((hand[i] - ref[i]) - (hand[2 + i] - ref[2 + i]))
        expected += -math.log(1.0 / (1.0 + math.exp(-z)))
    got = dpo_loss(logps[:2], logps[2:], torch.tensor(ref[:2]), torch.tensor(ref[2:]), beta).sum()
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_dpo_gradient():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4))
    assert torch.autograd.gradcheck(lambda *x: dpo_loss(*x, beta=0.5).sum(), (pc, pr, rc, rr))
    # d/d(policy chosen) of -log sigmoid(z) = -beta * sigmoid(-z); the rejected side gets the opposite sign.
    beta = 0.5
    dpo_loss(pc, pr, rc, rr, beta).sum().backward()
    z = beta * ((pc - rc) - (pr - rr)).detach()
    torch.testing.assert_close(pc.grad, -beta * torch.sigmoid(-z))
    torch.testing.assert_close(pr.grad, beta * torch.sigmoid(-z))


def test_formatting_tokens_are_excluded_from_the_dpo_log_probs():
    p = pairs()[0]
    kept = [t for t, m in zip(p.chosen, p.chosen_logp_mask) if m]
    assert TOK.decode(kept) == "Blue."
    assert TOK.decode([t for t, m in zip(p.rejected, p.rejected_logp_mask) if m]) == "I cannot say."
    # The NLL mask is the SFT mask: the content and its end of turn.
    assert TOK.decode([t for t, m in zip(p.chosen, p.chosen_nll_mask) if m]) == "Blue.<|eot_id|>"
    fmt = format_token_mask(p.chosen, TOK)
    assert not any(m and f for m, f in zip(p.chosen_logp_mask, fmt))
    # The sequence log-prob is the sum over exactly the content positions.
    model = tiny_model()
    b = collate_pairs([p])
    with torch.no_grad():
        logp = torch.log_softmax(model(b.tokens, b.doc_ids), -1)[0]
        seq = sequence_logps(model, b.tokens, b.doc_ids, b.logp_mask)
    idx = [t for t, m in enumerate(p.chosen_logp_mask) if m]
    assert len(idx) == len("Blue.")
    assert seq[0].item() == pytest.approx(sum(logp[t - 1, p.chosen[t]].item() for t in idx), abs=1e-5)


def test_reference_log_probs_precomputed_equal_on_the_fly():
    model = tiny_model()
    ps = reference_logps(model, pairs(), batch_pairs=2, pad_id=TOK.pad_id)  # padded batches of 2 and 1 pairs
    assert model.training
    with torch.no_grad():
        for p in ps:
            for ids, mask, ref in ((p.chosen, p.chosen_logp_mask, p.ref_chosen),
                                   (p.rejected, p.rejected_logp_mask, p.ref_rejected)):  # fmt: skip
                t = torch.tensor([ids])
                alone = sequence_logps(model, t, torch.zeros_like(t), torch.tensor([mask]))  # one unpadded row
                assert ref == pytest.approx(alone.item(), rel=1e-6)  # fp32 sums of ~100
    with pytest.raises(ValueError, match="reference log-probs"):
        DPOLoss()(model, collate_pairs(pairs()))


def test_dpo_loss_fn_with_token_averaged_nll():
    model = tiny_model()
    ps = reference_logps(model, pairs(), pad_id=TOK.pad_id)
    batch = collate_pairs(ps, TOK.pad_id)
    total, n = DPOLoss(beta=0.1, nll_coef=0.2)(model, batch)
    assert n == 3
    # Policy == reference: every DPO term is log 2. The NLL term: mean cross-entropy of each chosen response's
    # content + eot tokens, computed per pair on its own row.
    expected, pooled, pooled_n = 3 * math.log(2.0), 0.0, 0
    with torch.no_grad():
        for p in ps:
            logp = torch.log_softmax(model(torch.tensor([p.chosen]))[0], -1)
            idx = [t for t, m in enumerate(p.chosen_nll_mask) if m]
            nll = -sum(logp[t - 1, p.chosen[t]].item() for t in idx)
            expected += 0.2 * nll / len(idx)
            pooled, pooled_n = pooled + nll, pooled_n + len(idx)
    assert total.item() == pytest.approx(expected, abs=1e-4)
    # Averaged per response: "4" (2 tokens) weighs as much as "Red, like a rose." (18), unlike one pooled mean.
    assert sorted(sum(p.chosen_nll_mask) for p in ps) == [2, 6, 18]
    assert abs(3 * math.log(2.0) + 0.2 * 3 * pooled / pooled_n - expected) > 1e-2


def test_a_few_loop_steps_widen_the_preference_margin(tmp_path):
    torch.set_num_threads(1)
    model = tiny_model()
    ps = reference_logps(model, pairs(), pad_id=TOK.pad_id)
    batches = DialogBatches(ps, lambda items: collate_pairs(items, TOK.pad_id), per_step=3, micro=1)
    cfg = TrainConfig()
    monitor = Monitor(tmp_path, MonitorConfig(wandb=False, progress=False), True, "dpo")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    loop = TrainLoop(model, batches, DPOLoss(), opt, lambda step: 3e-3, cfg, phase="dpo", workdir=tmp_path,
                     info=D.DistInfo(), parallel=ParallelConfig(), monitor=monitor)  # fmt: skip
    first = loop.train_step()["loss"]
    for _ in range(10):
        last = loop.train_step()["loss"]
    assert last < first
    b = collate_pairs(ps, TOK.pad_id)
    with torch.no_grad():
        seq = sequence_logps(model, b.tokens, b.doc_ids, b.logp_mask).double()
    margin = (seq[:3] - b.ref[:3]) - (seq[3:] - b.ref[3:])
    assert (margin > 0).all()


def test_hand_computed_loss_and_gradient_with_pad_equal_to_eos():
    """A bigram model (logits = W[previous token]) over 4 tokens whose end token 3 is also the pad id: the loss and
    dW written out by hand. The chosen response ends with a real 3 (trained by the NLL term), the rejected one is
    padded with 3s (trained by nothing): only the masks decide, never a search for the pad or end id."""
    V, pad, beta, coef = 4, 3, 0.1, 0.2
    W = torch.tensor([[0.5, 1.0, -1.0, 0.0], [0.0, 0.2, 2.0, -0.5], [1.0, 0.0, 0.0, 1.5], [0.3, -0.3, 0.0, 0.7]],
                     requires_grad=True)  # fmt: skip

    def model(tokens, doc_ids):
        return W[tokens]

    pair = Pair(
        chosen=[0, 1, 2, 3],
        rejected=[0, 2, 3],
        chosen_logp_mask=[False, True, True, False],  # the content: tokens 1, 2
        rejected_logp_mask=[False, True, False],  # the content: token 2
        chosen_nll_mask=[False, True, True, True],  # the content and its end token
        ref_chosen=-3.0,
        ref_rejected=-1.0,
    )
    batch = collate_pairs([pair], pad_id=pad)
    assert batch.tokens.tolist() == [[0, 1, 2, 3], [0, 2, 3, 3]]  # the rejected row padded with the end id
    total, n = DPOLoss(beta=beta, nll_coef=coef)(model, batch)
    total.backward()

    rows = W.detach().tolist()

    def softmax(row):
        e = [math.exp(x) for x in row]
        return [x / sum(e) for x in e]

    def lp(a, b):  # log p(b | a)
        return math.log(softmax(rows[a])[b])

    chosen, rejected = lp(0, 1) + lp(1, 2), lp(0, 2)
    z = beta * ((chosen - -3.0) - (rejected - -1.0))
    nll = -(lp(0, 1) + lp(1, 2) + lp(2, 3)) / 3
    assert n == 1 and total.item() == pytest.approx(-math.log(1 / (1 + math.exp(-z))) + coef * nll, abs=1e-6)
    # d lp(a, b) / d W[a] = onehot(b) - softmax(W[a]); d(-log sigmoid z)/dz = -sigmoid(-z).
    grad = [[0.0] * V for _ in range(V)]

    def add(a, b, w):
        for k, p in enumerate(softmax(rows[a])):
            grad[a][k] += w * ((k == b) - p)

    g = -beta / (1 + math.exp(z))
    for a, b in ((0, 1), (1, 2)):
        add(a, b, g)
    add(0, 2, -g)
    for a, b in ((0, 1), (1, 2), (2, 3)):
        add(a, b, -coef / 3)
    assert W.grad.tolist() == [pytest.approx(r, abs=1e-6) for r in grad]
    assert W.grad[3].abs().max().item() == 0.0  # the pad rows' predictions are in no mask
