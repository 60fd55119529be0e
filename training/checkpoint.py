"""Sharded training checkpoints with torch.distributed.checkpoint (DCP), written atomically.

    <root>/step_00001200/
        .metadata, __<rank>_0.distcp    DCP: model and optimizer, each rank writes its own shards
        trainer.json                    step, tokens, data-loader position, schedule and phase state
        rng_rank<r>.json                each rank's RNG states
        CHECKPOINT.json                   written last: every file with its size (and xxh3), step, milestone

Every rank writes into `.step_XXXXXXXX.tmp/`; rank 0 writes CHECKPOINT.json and renames the directory once all
ranks are done, so a checkpoint directory that exists is whole. Before loading, the marker is checked against
the files; a checkpoint that fails the check (torn, truncated, or edited) is skipped loudly and the previous
one is used. After each save the oldest checkpoints beyond `keep_last` are deleted, except milestones.

A save that fails removes its temporary directory; a full disk (or quota) is reported as such, naming the path,
although DCP wraps the OSError and torch's writer may report the short write only as "unexpected pos".
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
import xxhash
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from tools import atomic
from training.distributed import DistInfo

MARKER = "CHECKPOINT.json"
NAME = re.compile(r"^step_(\d{8})$")
log = logging.getLogger(__name__)


class TornCheckpoint(ValueError):
    """A checkpoint directory whose files do not match its completeness marker."""


def _xxh3(path: Path) -> str:
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _describe(path: Path, checksum: bool) -> dict:
    info = {"size": path.stat().st_size}
    if checksum:
        info["xxh3"] = _xxh3(path)
    return info


def rng_state() -> dict:
    state = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "numpy": _numpy_state(),
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = base64.b64encode(torch.cuda.get_rng_state().numpy().tobytes()).decode()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(_literal(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["cuda"])), dtype=torch.uint8))


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]


def _literal(text: str):
    import ast

    return ast.literal_eval(text)


@contextlib.contextmanager
def single_process_ok():
    """DCP warns when one process saves or loads alone, which is what a single-process run means to do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _write_json(path: Path, obj) -> None:
    """A file inside the temporary checkpoint directory (published as a whole by one rename): written and
    synced, no per-file rename needed."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def verify(path: Path, checksum: bool = True) -> dict:
    """The marker of a complete checkpoint, or TornCheckpoint saying what is wrong."""
    marker = path / MARKER
    if not marker.is_file():
        raise TornCheckpoint(f"{path}: no {MARKER} (the save never finished)")
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError as e:
        raise TornCheckpoint(f"{marker}: not valid JSON ({e})") from None
    for name, want in info["files"].items():
        f = path / name
        if not f.is_file():
            raise TornCheckpoint(f"{f}: missing")
        if f.stat().st_size != want["size"]:
            raise TornCheckpoint(f"{f}: {f.stat().st_size} bytes, the marker says {want['size']}")
        if checksum and "xxh3" in want and _xxh3(f) != want["xxh3"]:
            raise TornCheckpoint(f"{f}: xxh3 does not match the marker")
    return info


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under `root`, oldest first (complete or not)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and NAME.match(p.name))


def latest_complete(root: Path, checksum: bool = True, warn=log.warning) -> tuple[Path, dict] | None:
    """The newest checkpoint that passes its marker check; each one skipped is reported through `warn`."""
    for path in reversed(list_checkpoints(root)):
        try:
            return path, verify(path, checksum)
        except TornCheckpoint as e:
            warn(f"TORN CHECKPOINT skipped, falling back to the previous one: {e}")
    return None


def app_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    state = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        state["optim"] = get_optimizer_state_dict(model, optimizer)
    return state


class Checkpointer:
    def __init__(self, root: str | Path, info: DistInfo, keep_last: int = 2, checksum: bool = True):
        self.root, self.info, self.keep_last, self.checksum = Path(root), info, keep_last, checksum

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:08d}"

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: dict,
        milestone: bool = False,
    ) -> Path:
        final = self.path(step)
        tmp = self.root / f".{final.name}.tmp"
        state = app_state(model, optimizer)
        try:
            self._write(step, final, tmp, state, trainer_state, milestone)
        except (Exception, CheckpointException) as e:  # CheckpointException is a BaseException
            explained = _write_error(e, tmp, final, _local_bytes(state))  # before the cleanup frees space
            if self.info.main:
                shutil.rmtree(tmp, ignore_errors=True)
            if explained is None:
                raise
            raise explained from e
        self.info.barrier()
        return final

    def _write(self, step: int, final: Path, tmp: Path, state: dict, trainer_state: dict, milestone: bool) -> None:
        if self.info.main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            if final.exists():  # a rollback replays steps: the new save replaces the old one
                shutil.rmtree(final)
            tmp.mkdir()
        self.info.barrier()
        with single_process_ok():
            dcp.save(state, checkpoint_id=tmp, no_dist=not self.info.active)
        _write_json(tmp / f"rng_rank{self.info.rank}.json", rng_state())
        # Each rank describes the files it wrote; rank 0 writes the rest and the marker.
        mine = {
            p.name: _describe(p, self.checksum)
            for p in tmp.iterdir()
            if re.match(rf"^__{self.info.rank}_\d+\.distcp$", p.name) or p.name == f"rng_rank{self.info.rank}.json"
        }
        files = {k: v for part in self.info.gather_objects(mine) for k, v in part.items()}
        if self.info.main:
            _write_json(tmp / "trainer.json", trainer_state)
            for name in (".metadata", "trainer.json"):
                files[name] = _describe(tmp / name, self.checksum)
            marker = {"step": step, "milestone": milestone, "world": self.info.world, "files": files}
            _write_json(tmp / MARKER, marker)
            os.rename(tmp, final)
            atomic._fsync_dir(self.root)
            self._prune()

    def mark_milestone(self, path: Path) -> None:
        """Keep an existing checkpoint for good (its marker is rewritten atomically)."""
        if self.info.main:
            marker = json.loads((path / MARKER).read_text())
            if not marker.get("milestone"):
                marker["milestone"] = True
                atomic.write_json(path / MARKER, marker)
        self.info.barrier()

    def _prune(self) -> None:
        ordinary = []
        for path in list_checkpoints(self.root):
            try:
                marker = json.loads((path / MARKER).read_text())
            except (OSError, json.JSONDecodeError):
                continue  # torn ones are left for inspection; they are never loaded
            if not marker.get("milestone"):
                ordinary.append(path)
        for path in ordinary[: max(0, len(ordinary) - self.keep_last)]:
            shutil.rmtree(path, ignore_errors=True)

    def load(
        self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, rng: bool = True
    ) -> dict:
        """Load model (and optimizer, RNG) state from `path` into the live objects; returns trainer.json."""
        state = app_state(model, optimizer)
        with single_process_ok():
            dcp.load(state, checkpoint_id=path, no_dist=not self.info.active)
        set_model_state_dict(model, state["model"])
        if optimizer is not None:
            set_optimizer_state_dict(model, optimizer, state["optim"])
        rng_file = path / f"rng_rank{self.info.rank}.json"
        if rng and rng_file.is_file():
            set_rng_state(json.loads(rng_file.read_text()))
        return json.loads((path / "trainer.json").read_text())


def _local_bytes(obj) -> int:
    """Bytes of the tensors (this rank's shards) in a nested state dict: about what a save writes."""
    if isinstance(obj, torch.Tensor):
        t = obj.to_local() if hasattr(obj, "to_local") else obj
        return t.numel() * t.element_size()
    if isinstance(obj, dict):
        return sum(_local_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_local_bytes(v) for v in obj)
    return 0


def _write_error(e: BaseException, tmp: Path, final: Path, need: int) -> OSError | None:
    """The failed save as an OSError that says what happened and names the checkpoint (None: not a disk error).
    A full disk is recognised by its errno, or, when torch's writer hid it, by less free space than the save
    needs."""
    found = [e, *(exc for exc, _ in e.failures.values())] if isinstance(e, CheckpointException) else [e]
    cause = next((x for x in found if isinstance(x, OSError) and x.errno), None)
    try:
        free = shutil.disk_usage(tmp.parent).free
    except OSError:
        free = None
    if cause is not None and cause.errno not in (errno.ENOSPC, errno.EDQUOT):
        where = cause.filename or tmp
        return OSError(cause.errno, f"{os.strerror(cause.errno).lower()} while saving checkpoint {final}", str(where))
    if cause is None and (free is None or free >= need):
        return None
    code = cause.errno if cause is not None else errno.ENOSPC
    room = f": {_size(free)} free there, the checkpoint needs about {_size(need)}" if free is not None else ""
    return OSError(code, f"{os.strerror(code).lower()} while saving checkpoint {final}{room}", str(tmp))


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.0f} KiB"


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on rank 0's CPU (other ranks get {}); call on every rank."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
