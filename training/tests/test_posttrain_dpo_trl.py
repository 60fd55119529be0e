"""herd's DPO loss (training/posttrain/dpo.py: sigmoid DPO, beta 0.1, + 0.2 x chosen NLL) against TRL's DPOTrainer.

The same tiny Llama in both frameworks (herd's weights exported with model.convert, chat template included, read by
transformers), TRL tokenising conversational preference data itself, TRL configured as the paper's loss:
loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.2] (TRL's successor of `rpo_alpha`). Where they compute the same
thing, losses and gradients agree to float32 rounding. The differences, each checked below:

- Masks: TRL's completion (assistant content + <|eot_id|>) is herd's NLL mask. herd's DPO term leaves <|eot_id|> out
  (a formatting token shared by both responses, section 4.1.4); TRL's sigmoid term keeps it. So herd's loss equals
  TRL's sigmoid term on herd's DPO mask plus 0.2 x TRL's sft term on TRL's own completion.
- Normalisation of the NLL: TRL's sft term is the mean over all chosen tokens of the batch; herd's is the mean over
  each chosen response's tokens, then over pairs (the 0.2 NLL term token-averaged over the chosen response). Equal
  for one pair; for a batch of different lengths herd's equals the mean of TRL's per pair.
- TRL pads with <|end_of_text|> (pad id = end id); herd's rows padded the same way give the same loss.

trl is a test-only dependency (third_party/python/requirements.in); without it this file fails, it does not skip.
"""

import pytest
import torch

try:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
except ImportError as e:  # a clear failure, never a skip: the comparison must run wherever the tests run
    raise ImportError(
        f"test_posttrain_dpo_trl.py needs trl (test-only dependency in third_party/python/requirements.in; "
        f"rebuild the venv from the lock): {e}"
    ) from e

from model.convert import write_checkpoint
from model.interop import to_hf_state_dict
from model.llama import build
from model.presets import preset
from training.posttrain.dpo import DPOLoss, PairBatch, collate_pairs, encode_pair, reference_logps, sequence_logps
from training.sample_shards import byte_tokenizer

TOK = byte_tokenizer()
ARGS = preset("tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=TOK.vocab_size,
              max_seq_len=256)  # fmt: skip
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}]
DATA = [  # chosen responses of 5, 17 and 1 characters
    (PROMPT, "Blue.", "I cannot say."),
    (PROMPT[1:], "Red, like a rose.", "Dog."),
    ([{"role": "user", "content": "2+2?"}], "4", "Five, I think."),
]
BETA, NLL = 0.1, 0.2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """herd's reference (seed 0) and policy (seed 1) models, the same two in transformers, and a DPOTrainer."""
    root = tmp_path_factory.mktemp("trl")
    ref, policy = build(ARGS, seed=0), build(ARGS, seed=1)
    for name, m in (("ref", ref), ("policy", policy)):
        write_checkpoint(ARGS, m.state_dict(), TOK, root / name, "hf")
    hf = {n: AutoModelForCausalLM.from_pretrained(root / n, dtype=torch.float32) for n in ("ref", "policy")}
    rows = [{"prompt": p, "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]} for p, c, r in DATA]  # fmt: skip
    # bf16=False: TRL's default (True) runs the reference model under bf16 autocast, even on CPU.
    cfg = DPOConfig(output_dir=str(root / "out"), beta=BETA, loss_type=["sigmoid", "sft"], loss_weights=[1.0, NLL],
                    report_to="none", use_cpu=True, bf16=False, per_device_train_batch_size=len(DATA))  # fmt: skip
    trainer = DPOTrainer(model=hf["policy"], ref_model=hf["ref"], args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(root / "policy"))  # fmt: skip
    pairs = [encode_pair(TOK, p, c, r) for p, c, r in DATA]
    return ref, policy, trainer, pairs


def trl_batch(trainer, idx):
    return trainer.data_collator([trainer.train_dataset[i] for i in idx])


def trl_loss(trainer, batch, terms=None, completion_mask=None):
    """TRL's loss on a collated batch; `terms` = [(loss_type, weight)] replaces the configured ones for this call."""
    saved = trainer.loss_types, trainer.loss_weights
    if terms is not None:
        trainer.loss_types, trainer.loss_weights = [t for t, _ in terms], [w for _, w in terms]
    try:
        inputs = batch if completion_mask is None else {**batch, "completion_mask": completion_mask.long()}
        return trainer.compute_loss(trainer.model, inputs)
    finally:
        trainer.loss_types, trainer.loss_weights = saved


def grads_of(model, loss_fn, hf: bool):
    """(loss, gradients under HF names): herd's gradients are renamed and their wq/wk rows permuted like weights."""
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    named = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    return loss.item(), named if hf else to_hf_state_dict(ARGS, named)


def herd_loss(policy, batch: PairBatch):
    total, pairs = DPOLoss(beta=BETA, nll_coef=NLL)(policy, batch)
    return total / pairs  # what the loop's step divides by


def test_trl_tokenises_and_pads_the_pairs_as_herd_encodes_them(setup):
    _, _, trainer, pairs = setup
    b = trl_batch(trainer, range(len(DATA)))
    P = len(pairs)
    for i, p in enumerate(pairs):
        for row, ids in ((i, p.chosen), (P + i, p.rejected)):
            n = int(b["attention_mask"][row].sum())
            assert b["input_ids"][row, :n].tolist() == ids  # the exported chat template = model.dialog's ids
            assert set(b["input_ids"][row, n:].tolist()) <= {TOK.eos_id}  # padded with the end-of-text id
        assert b["completion_mask"][i, : len(p.chosen)].bool().tolist() == p.chosen_nll_mask
        rejected_nll = [m or j == len(p.rejected) - 1 for j, m in enumerate(p.rejected_logp_mask)]  # + <|eot_id|>
        assert b["completion_mask"][P + i, : len(p.rejected)].bool().tolist() == rejected_nll


@pytest.mark.parametrize("i", range(len(DATA)))
def test_herds_loss_and_gradients_equal_trls_on_herds_masks(setup, i):
    """One pair: herd's DPOLoss (DPO on the content, NLL on content + <|eot_id|>) = TRL's sigmoid term on herd's DPO
    mask + 0.2 x TRL's sft term on its completion, in value and in every parameter's gradient."""
    ref, policy, trainer, pairs = setup
    (pair,) = reference_logps(ref, [pairs[i]], pad_id=TOK.eos_id)
    batch = collate_pairs([pair], pad_id=TOK.eos_id)
    trl = trl_batch(trainer, [i])
    assert torch.equal(trl["input_ids"], batch.tokens)
    ours, ours_g = grads_of(policy, lambda: herd_loss(policy, batch), hf=False)

    def theirs_fn():
        sigmoid = trl_loss(trainer, trl, [("sigmoid", 1.0)], completion_mask=batch.logp_mask)
        return sigmoid + NLL * trl_loss(trainer, trl, [("sft", 1.0)])

    theirs, theirs_g = grads_of(trainer.model, theirs_fn, hf=True)
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert ours_g.keys() == theirs_g.keys()
    for k in ours_g:
        torch.testing.assert_close(ours_g[k], theirs_g[k], rtol=1e-4, atol=1e-6, msg=k)


def test_trls_configured_loss_is_herds_on_trls_masks_and_the_nll_normalisation_differs(setup):
    """With TRL's masks (completion = content + <|eot_id|> in both terms), TRL's configured loss is herd's for one
    pair. For three pairs of different lengths, herd's NLL term is the mean over pairs of per-response means, TRL's
    the mean over all chosen tokens: herd's loss = TRL's sigmoid + 0.2 x the mean of TRL's sft per pair."""
    ref, policy, trainer, _ = setup

    def as_herd(trl) -> PairBatch:
        P = trl["input_ids"].shape[0] // 2
        tokens, doc_ids, mask = trl["input_ids"], 1 - trl["attention_mask"], trl["completion_mask"].bool()
        with torch.no_grad():
            refs = sequence_logps(ref, tokens, doc_ids, mask).double()
        return PairBatch(tokens, doc_ids, mask, mask[:P], refs)

    one = trl_batch(trainer, [0])
    ours, ours_g = grads_of(policy, lambda: herd_loss(policy, as_herd(one)), hf=False)
    theirs, theirs_g = grads_of(trainer.model, lambda: trl_loss(trainer, one), hf=True)
    assert ours == pytest.approx(theirs, abs=1e-5)
    for k in ours_g:
        torch.testing.assert_close(ours_g[k], theirs_g[k], rtol=1e-4, atol=1e-6, msg=k)

    every = range(len(DATA))
    batch = trl_batch(trainer, every)
    with torch.no_grad():
        ours = herd_loss(policy, as_herd(batch)).item()
        configured = trl_loss(trainer, batch).item()
        sigmoid = trl_loss(trainer, batch, [("sigmoid", 1.0)]).item()
        pooled = trl_loss(trainer, batch, [("sft", 1.0)]).item()
        per_pair = [trl_loss(trainer, trl_batch(trainer, [i]), [("sft", 1.0)]).item() for i in every]
    assert configured == pytest.approx(sigmoid + NLL * pooled, abs=1e-6)
    assert ours == pytest.approx(sigmoid + NLL * sum(per_pair) / len(per_pair), abs=1e-5)
    lengths = batch["completion_mask"][: len(DATA)].sum(-1).tolist()  # chosen tokens: 6, 18 and 2
    assert pooled == pytest.approx(sum(n * x for n, x in zip(lengths, per_pair)) / sum(lengths), abs=1e-5)
    assert abs(ours - configured) > 1e-3  # the two normalisations really differ on this batch
