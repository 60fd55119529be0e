"""Sharded checkpoints: atomic publication, completeness markers, torn-checkpoint fallback, retention."""

from __future__ import annotations

import errno
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from torch.distributed.checkpoint.api import CheckpointException

from model.llama import build
from model.presets import preset
from training import checkpoint as ckpt
from training.distributed import DistInfo
from training.monitor import read_metrics
from training.tests.helpers import micro_recipe, text_shards
from training.trainer import Trainer

ARGS = preset("tiny", dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, vocab_size=64)


def model_and_optimizer(seed: int):
    model = build(ARGS, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randint(0, 64, (2, 8))).sum().backward()
    opt.step()
    return model, opt


def test_save_then_load_restores_everything(tmp_path):
    model, opt = model_and_optimizer(0)
    c = ckpt.Checkpointer(tmp_path, DistInfo(), keep_last=2)
    torch.manual_seed(123)
    path = c.save(7, model, opt, {"step": 7, "loader": {"pos": 3}})
    expected_draw = torch.rand(3)
    marker = ckpt.verify(path)
    assert marker["step"] == 7 and set(marker["files"]) >= {".metadata", "trainer.json", "rng_rank0.json"}
    assert all("xxh3" in f for f in marker["files"].values())
    other, other_opt = model_and_optimizer(1)
    state = c.load(path, other, other_opt)
    assert state == {"step": 7, "loader": {"pos": 3}}
    for (k, v), w in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(v, w), k
    a, b = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG continues where the save left it


@pytest.mark.parametrize("damage", ["no_marker", "truncated", "flipped_byte", "bad_marker"])
def test_a_torn_checkpoint_is_skipped_loudly(tmp_path, damage):
    model, opt = model_and_optimizer(0)
    c = ckpt.Checkpointer(tmp_path, DistInfo(), keep_last=3)
    c.save(1, model, opt, {"step": 1})
    newest = c.save(2, model, opt, {"step": 2})
    data = next(newest.glob("*.distcp"))
    if damage == "no_marker":
        (newest / ckpt.MARKER).unlink()
    elif damage == "truncated":
        data.write_bytes(data.read_bytes()[:-10])
    elif damage == "flipped_byte":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:
        (newest / ckpt.MARKER).write_text("{not json")
    warnings = []
    found = ckpt.latest_complete(tmp_path, warn=warnings.append)
    assert found is not None and found[0].name == "step_00000001"
    assert len(warnings) == 1 and "TORN CHECKPOINT" in warnings[0] and "step_00000002" in warnings[0]


def test_keep_last_k_plus_milestones_and_leftover_temp_dirs(tmp_path):
    model, opt = model_and_optimizer(0)
    c = ckpt.Checkpointer(tmp_path, DistInfo(), keep_last=2)
    (tmp_path / ".step_00000003.tmp").mkdir(parents=True)  # a save killed half-way
    for step in range(1, 7):
        c.save(step, model, opt, {"step": step}, milestone=step == 2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002", "step_00000005", "step_00000006"]
    assert not list(tmp_path.glob(".*.tmp"))
    c.mark_milestone(tmp_path / "step_00000005")
    c.save(7, model, opt, {"step": 7})
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "step_00000002", "step_00000005", "step_00000006", "step_00000007",
    ]  # fmt: skip


def test_the_trainer_resumes_from_the_previous_checkpoint_when_the_newest_is_torn(tmp_path):
    shards = text_shards(tmp_path / "shards", chars=30_000)
    recipe = micro_recipe()
    first = Trainer(recipe, recipe.pretrain, tmp_path / "run", shards, phase="pretrain")
    first.fit(until_tokens=2048)  # checkpoints at steps 4 and 8
    (tmp_path / "run/checkpoints/step_00000008" / ckpt.MARKER).unlink()
    again = Trainer(recipe, recipe.pretrain, tmp_path / "run", shards, phase="pretrain")
    assert again.step == 4 and again.tokens == 1024
    events = [r for r in read_metrics(tmp_path / "run/metrics.jsonl") if "event" in r]
    torn = [e for e in events if e["event"] == "torn_checkpoint"]
    assert len(torn) == 1 and "step_00000008" in torn[0]["message"]
    assert events[-1]["event"] == "resume" and events[-1]["step"] == 4
    assert json.loads((tmp_path / "run/checkpoints/step_00000004/trainer.json").read_text())["step"] == 4


@pytest.mark.parametrize("failure", ["enospc", "short_write", "read_only", "other"])
def test_a_failed_save_says_why_names_the_path_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, failure):
    """What DCP raised when a checkpoint met a full tmpfs: its OSError wrapped, or torch's writer hiding it."""
    model, opt = model_and_optimizer(0)
    c = ckpt.Checkpointer(tmp_path, DistInfo())
    first = c.save(1, model, opt, {"step": 1})
    cause = {
        "enospc": OSError(errno.ENOSPC, "No space left on device"),
        "short_write": RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
        "read_only": OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".step_00000002.tmp/.metadata")),
        "other": RuntimeError("something else"),
    }[failure]
    free = 4096 if failure == "short_write" else 10**12  # a full disk has less room than the save needs

    def failing_save(state, checkpoint_id, no_dist):
        (checkpoint_id / "__0_0.distcp").write_bytes(b"half a shard")
        raise CheckpointException("save failed", {0: (cause, None)})

    monkeypatch.setattr(ckpt.dcp, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=free))
    with pytest.raises((OSError, CheckpointException)) as info:
        c.save(2, model, opt, {"step": 2})
    message = str(info.value)
    if failure in ("enospc", "short_write"):
        assert info.value.errno == errno.ENOSPC
        assert f"no space left on device while saving checkpoint {tmp_path / 'step_00000002'}" in message
        assert "4 KiB free there" in message if failure == "short_write" else "931.3 GiB free there" in message
        assert str(tmp_path / ".step_00000002.tmp") in message
    elif failure == "read_only":
        assert info.value.errno == errno.EROFS and "read-only file system while saving checkpoint" in message
        assert ".step_00000002.tmp/.metadata" in message
    else:
        assert isinstance(info.value, CheckpointException) and "something else" in message  # not a disk problem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001"]  # the partial save is gone
    assert ckpt.latest_complete(tmp_path)[0] == first
