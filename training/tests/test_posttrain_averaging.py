"""Model averaging across runs: a known mean of three hand-set state dicts in every file form, a reward model
(backbone + head) averaged into a model, and the errors for mismatched tensors and unsafe files."""

import types

import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint import save_model
from model.llama import build
from model.presets import preset
from training.anneal import mean_state_dict
from training.posttrain.averaging import average_into, average_models
from training.posttrain.reward import RewardModel
from training.sample_shards import byte_tokenizer

# Three runs' weights; the means are exact in binary: w -> [3, -1, 0.25], head -> [[1.5]], half -> [2.0].
RUNS = [
    {"w": [1.0, -2.0, 0.5], "head": [[0.5]], "half": [1.0]},
    {"w": [2.0, 0.0, 0.0], "head": [[1.0]], "half": [2.0]},
    {"w": [6.0, -1.0, 0.25], "head": [[3.0]], "half": [3.0]},
]


def state(run: dict) -> dict[str, torch.Tensor]:
    return {"backbone.w": torch.tensor(run["w"]), "head.weight": torch.tensor(run["head"]),
            "backbone.half": torch.tensor(run["half"], dtype=torch.bfloat16)}  # fmt: skip


def test_the_mean_of_three_hand_set_models_in_every_file_form(tmp_path):
    paths = []
    for i, run in enumerate(RUNS):  # a .safetensors file, a torch file, and a directory holding model.safetensors
        if i == 0:
            paths.append(tmp_path / "a.safetensors")
            save_file(state(run), str(paths[-1]))
        elif i == 1:
            paths.append(tmp_path / "b.pt")
            torch.save(state(run), paths[-1])
        else:
            paths.append(tmp_path / "c")
            paths[-1].mkdir()
            save_file(state(run), str(paths[-1] / "model.safetensors"))
    avg = average_models(paths)
    assert avg["backbone.w"].tolist() == [3.0, -1.0, 0.25]
    assert avg["head.weight"].tolist() == [[1.5]]
    assert avg["backbone.half"].dtype == torch.bfloat16 and avg["backbone.half"].tolist() == [2.0]
    assert avg["backbone.w"].dtype == torch.float32


def test_a_reward_model_is_averaged_backbone_and_head(tmp_path):
    tok = byte_tokenizer()
    args = preset("tiny", dim=32, n_layers=1, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=tok.vocab_size,
                  max_seq_len=64)  # fmt: skip
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(RewardModel(build(args, seed=seed)))
        save_file(models[-1].state_dict(), str(tmp_path / f"rm{seed}.safetensors"))
    into = RewardModel(build(args, seed=9))
    average_into(into, [tmp_path / f"rm{s}.safetensors" for s in range(3)])
    for key, value in into.state_dict().items():
        stack = torch.stack([m.state_dict()[key] for m in models]).double()
        torch.testing.assert_close(value.double(), stack.mean(0), rtol=1e-7, atol=1e-12)  # one fp32 rounding
    assert {"head.weight", "backbone.output.weight"} <= set(into.state_dict())
    assert not torch.equal(into.head.weight, models[0].head.weight)
    # A policy exported as a model directory averages the same way.
    for seed in range(2):
        save_model(build(args, seed=seed), tok, tmp_path / f"policy{seed}")
    avg = average_models([tmp_path / "policy0", tmp_path / "policy1"])
    w = "layers.0.attention.wq.weight"
    expected = (build(args, seed=0).state_dict()[w].double() + build(args, seed=1).state_dict()[w].double()) / 2
    torch.testing.assert_close(avg[w].double(), expected, rtol=1e-7, atol=1e-12)


def test_mismatched_models_are_refused_naming_the_file_and_tensor(tmp_path):
    save_file(state(RUNS[0]), str(tmp_path / "a.safetensors"))
    short = state(RUNS[1])
    del short["head.weight"]
    save_file(short, str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match=r"b\.safetensors: lacks tensor 'head\.weight' compared with .*a\.safetensors"):
        average_models([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    extra = {**state(RUNS[1]), "head.bias": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"run2: has an extra tensor 'head\.bias'"):
        mean_state_dict([("run1", state(RUNS[0])), ("run2", extra)])
    wide = {**state(RUNS[2]), "backbone.w": torch.zeros(4)}
    save_file(wide, str(tmp_path / "c.safetensors"))
    with pytest.raises(ValueError, match=r"c\.safetensors: 'backbone\.w' has shape \[4\], .*a\.safetensors has \[3\]"):
        average_models([tmp_path / "a.safetensors", tmp_path / "c.safetensors"])
    with pytest.raises(ValueError, match="no models to average"):
        average_models([])


def test_only_safe_loading(tmp_path):
    torch.save({"w": types.SimpleNamespace(a=1)}, tmp_path / "evil.pt")  # a pickle that is not plain tensors
    with pytest.raises(ValueError, match=r"evil\.pt: cannot be loaded safely"):
        average_models([tmp_path / "evil.pt"])
    with pytest.raises(FileNotFoundError, match="no weights"):
        average_models([tmp_path / "missing"])
