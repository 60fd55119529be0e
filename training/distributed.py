"""Scale-out, applied from outside the model (torchtitan-style): process group, the kernel backend, FSDP2 or DDP,
activation checkpointing and torch.compile per transformer block, each optional by config.

Ranks come from torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or, inside
a submitit job with several tasks, from submitit's TorchDistributedEnvironment (Slurm or local).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from model.dtypes import parse_dtype
from training.config import ParallelConfig
from training.kernel_swap import apply_kernels


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this module created the process group (and destroys it in close())

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, value: float | int | torch.Tensor) -> torch.Tensor:
        """All-reduced sum (float64 on the CPU path, so token counts and loss sums stay exact)."""
        t = torch.as_tensor(value, dtype=torch.float64).clone()
        if self.active:
            t = t.to(self._comm_device())
            dist.all_reduce(t)
        return t.cpu()

    def max(self, value: float) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64)
        if self.active:
            t = t.to(self._comm_device())
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.cpu()[0])

    def gather_objects(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _from_submitit() -> None:
    """Inside a multi-task submitit job, export torchrun-style variables from submitit's environment."""
    if "RANK" in os.environ or "SUBMITIT_EXECUTOR" not in os.environ:
        return
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda but no CUDA device is available (this torch build or machine has none)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init(device: str = "auto", backend: str = "auto") -> DistInfo:
    """Join (or create) the process group described by the environment; a single process needs none."""
    _from_submitit()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world == 1:
        return DistInfo(device=dev)
    owns = False
    if not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=dev if dev.type == "cuda" else None)
        owns = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)


def param_dtype(cfg: ParallelConfig, device: torch.device) -> torch.dtype:
    if cfg.param_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return parse_dtype(cfg.param_dtype, "parallel.param_dtype (or auto)")


def apply_activation_checkpointing(model: nn.Module, mode: str, every: int = 2) -> None:
    """Wrap transformer blocks so their activations are recomputed in the backward pass.
    full: every block; selective: every `every`-th block (torchtitan's layer-level selective AC)."""
    if mode == "none":
        return
    if mode not in ("full", "selective"):
        raise ValueError(f"parallel.activation_checkpointing must be none, full or selective, got '{mode}'")
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i, (name, block) in enumerate(list(model.layers.items())):
        if mode == "full" or i % every == 0:
            model.layers[name] = checkpoint_wrapper(block, preserve_rng_state=False)


def apply_compile(model: nn.Module, backend: str = "inductor") -> None:
    """Compile each block in place (module.compile keeps parameter names unchanged). The blocks share their
    code, so one compiled graph serves them all."""
    for block in model.layers.values():
        block.compile(backend=backend)


def apply_fsdp(model: nn.Module, cfg: ParallelConfig, device: torch.device, forward_methods=("hidden",)) -> None:
    """FSDP2: one fully_shard unit per block, then the root (embeddings, final norm, output head)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    reduce = parse_dtype(cfg.reduce_dtype, "parallel.reduce_dtype")
    mp = MixedPrecisionPolicy(param_dtype=param_dtype(cfg, device), reduce_dtype=reduce)
    blocks = list(model.layers.values())
    for i, block in enumerate(blocks):
        # The last block is gathered again right away by the backward pass: keep it unsharded.
        fully_shard(block, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mp_policy=mp, reshard_after_forward=False)
    for method in forward_methods:
        register_fsdp_forward_method(model, method)


def parallelize(model: nn.Module, cfg: ParallelConfig, info: DistInfo) -> nn.Module:
    """The kernel backend's module swaps, then activation checkpointing, then compile, then FSDP2 (the order
    torchtitan uses). DDP is applied later, around the loss module (see wrap_ddp)."""
    apply_kernels(model, cfg.kernels, info.device)
    apply_activation_checkpointing(model, cfg.activation_checkpointing, cfg.ac_every)
    if cfg.compile:
        apply_compile(model, cfg.compile_backend)
    if info.active and cfg.data_parallel == "fsdp":
        apply_fsdp(model, cfg, info.device)
    elif info.active and cfg.data_parallel != "ddp":
        raise ValueError(f"parallel.data_parallel must be fsdp or ddp, got '{cfg.data_parallel}'")
    return model


def wrap_ddp(module: nn.Module, cfg: ParallelConfig, info: DistInfo) -> nn.Module:
    if info.active and cfg.data_parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)
    return module


def no_sync(module: nn.Module, model: nn.Module, sync: bool):
    """Skip the gradient reduction of a micro-batch that is not the step's last (DDP or FSDP2)."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(module, "no_sync"):  # DDP
        return module.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def fsdp_no_sync():
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return fsdp_no_sync()
    return contextlib.nullcontext()


def autocast(info: DistInfo, cfg: ParallelConfig):
    """bf16 autocast on GPU when parameters are not already cast by FSDP2's mixed precision."""
    fsdp = info.active and cfg.data_parallel == "fsdp"
    dtype = param_dtype(cfg, info.device)
    if info.device.type == "cuda" and not fsdp and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()
