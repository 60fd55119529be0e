"""Config schemas of the training recipe: one dataclass per component, composed into a `Recipe`.

A recipe (training/configs/<name>.yaml) holds the model, the three phases of the paper's pre-training
(section 3.4: initial pre-training, long-context pre-training, annealing), how they are parallelised and
monitored, and the cluster the planner sizes them for. Each phase is a `TrainConfig` (optimizer, LR
schedule, token-triggered batch/sequence stages, data mix, checkpoints, loss-spike handling).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools import config as tools_config
from tools.paths import user_path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class ModelConfig:
    preset: str = "tiny"  # model.presets name
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelArgs fields, e.g. {dim: 128, n_layers: 2}
    # vocab_size comes from the shards' manifest (tokenizer.vocab_size) unless overridden here.


@dataclass
class OptimConfig:
    lr: float = 3e-4  # peak learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_norms_and_embeddings: bool = False  # False: no weight decay on RMSNorm weights and tok_embeddings
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)


@dataclass
class LRConfig:
    schedule: str = "cosine"  # cosine | linear | constant (after the linear warm-up)
    warmup_steps: int = 0
    decay_steps: int = 0  # step at which the decay ends (warm-up included); 0: the phase's last step
    final_lr: float = 0.0


@dataclass
class BatchStage:
    """From `tokens` trained tokens on, each step takes `batch_tokens` tokens in rows of `seq_len`."""

    tokens: int = 0
    batch_tokens: int = 4096
    seq_len: int = 256


@dataclass
class DataConfig:
    # Token shares of the mix, by category of the shard set; empty: data.shards.PAPER_MIX. Categories missing from the
    # shards are dropped with a warning (and counted in the summary) unless `strict`.
    mix: dict[str, float] = field(default_factory=dict)
    # Mix keys that live in another shard set: key -> its directory (all its categories of `split`).
    sources: dict[str, str] = field(default_factory=dict)
    split: str = "train"
    valid_split: str = "valid"
    seed: int = 0
    strict: bool = False


@dataclass
class CheckpointConfig:
    every_steps: int = 1000
    every_seconds: float = 0.0  # also save when this much wall time has passed since the last save (0: off)
    keep_last: int = 2
    milestone_every: int = 0  # steps; milestones are never deleted (0: none besides phase ends)
    checksum: bool = True  # xxh3 of every file in the completeness marker, checked before loading


@dataclass
class SpikeConfig:
    factor: float = 0.0  # a step is a spike when loss > factor x running mean (0: only non-finite losses)
    ema: float = 0.95  # running mean: m = ema * m + (1 - ema) * loss
    warmup_steps: int = 20  # no detection before this many steps of the phase
    action: str = "skip"  # skip: drop the batch's update | rollback: reload the last checkpoint, skip the data
    max_events: int = 8  # fail after this many spikes in a row


@dataclass
class TrainConfig:
    """One training phase."""

    optim: OptimConfig = field(default_factory=OptimConfig)
    lr: LRConfig = field(default_factory=LRConfig)
    batch: list[BatchStage] = field(default_factory=lambda: [BatchStage()])
    tokens: int = 0  # length of the phase in trained tokens
    micro_batch_rows: int = 0  # rows per micro-batch on each rank (0: all of the rank's rows at once)
    data: DataConfig = field(default_factory=DataConfig)
    loss: str = "cross_entropy"  # cross_entropy | chunked | fused (kernels) | module:function
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    spike: SpikeConfig = field(default_factory=SpikeConfig)
    valid_every: int = 0  # steps between validation losses (0: only at the end)
    valid_batches: int = 2
    valid_rows: int = 8  # rows of each validation batch (at the phase's current sequence length)


@dataclass
class GateConfig:
    """The end-of-stage check of long-context pre-training (paper section 3.4.2)."""

    fn: str = "passkey"  # passkey (training.gates) | module:function, e.g. eval.niah:gate (the recipes' choice)
    threshold: float = 0.9  # minimum retrieval accuracy at the stage's length
    n: int = 8  # retrieval trials
    loss_tolerance: float = 0.02  # short-context valid loss may rise at most this fraction over its pre-stage value
    short_seq_len: int = 0  # length of the short-context validation (0: the first batch stage of pre-training)
    extra_tokens: int = 0  # when the gate fails, train this many more tokens (0: a tenth of the stage) ...
    max_extra: int = 2  # ... at most this many times, then fail with the gate's numbers


@dataclass
class ContextStage:
    seq_len: int = 1024
    tokens: int = 0
    batch_tokens: int = 0  # 0: the last pre-training batch size in tokens
    rope_theta: float = 0.0  # 0: the model's


@dataclass
class LongContextConfig:
    train: TrainConfig = field(default_factory=TrainConfig)  # optimizer, LR, data, ... shared by the stages
    stages: list[ContextStage] = field(default_factory=list)
    gate: GateConfig = field(default_factory=GateConfig)


@dataclass
class AnnealConfig:
    train: TrainConfig = field(default_factory=TrainConfig)  # LR linear to 0, high-quality mix
    average: int = 4  # checkpoints saved evenly along the anneal and averaged (Polyak) into the final model


@dataclass
class ProbeConfig:
    """The annealing data-quality probe (paper section 3.1.3)."""

    candidate_shards: str = ""  # the candidate data's shard set
    candidate_category: str = ""  # its category to use ("": all categories of the split)
    fraction: float = 0.3  # share of the candidate in the anneal mix; the default mix gets the rest
    eval: str = ""  # module:function(model, tokenizer) -> {metric: value}; "": valid loss per category


@dataclass
class ParallelConfig:
    data_parallel: str = "fsdp"  # fsdp (FSDP2, fully_shard per block) | ddp, when more than one process
    param_dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    reduce_dtype: str = "float32"
    activation_checkpointing: str = "none"  # none | full | selective (every `ac_every`-th block)
    ac_every: int = 2
    compile: bool = False  # torch.compile each transformer block
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: tracing only, for tests)
    backend: str = "auto"  # process group: auto = nccl on GPU, gloo on CPU
    init: str = "auto"  # full: initialise the whole model, then shard | meta: initialise the shards | auto
    # reference: model.llama's PyTorch modules | triton: RMSNorm, RoPE, SwiGLU and flash attention swapped to the
    # kernels' Triton ops (training/kernel_swap.py; CPU only in Triton's interpreter, TRITON_INTERPRET=1).
    # The fused loss is the phase's `loss=fused`.
    kernels: str = "reference"


@dataclass
class MonitorConfig:
    log_every: int = 1  # steps between metrics lines
    wandb: bool = True  # offline unless WANDB_MODE says otherwise
    wandb_project: str = "herd"
    progress: bool = True
    peak_flops: float = 0.0  # per device; 0: from the device table (CPU: measured once)


@dataclass
class PlanConfig:
    """The cluster the planner sizes the recipe for (paper section 3.3, Table 4)."""

    gpus: int = 16384
    gpu: str = "h100"
    gpus_per_node: int = 8
    memory_gb: float = 80.0
    tp: int = 8
    cp: int = 0  # 0: keep 8,192 tokens per GPU (sequence / 8,192)
    pp: int = 16
    micro_batch_size: int = 1  # sequences per pipeline micro-batch
    activation_checkpointing: str = "none"  # none | full | selective
    tflops: float = 400.0  # achieved per GPU; the MFU follows (0: use `mfu`)
    mfu: float = 0.0
    total_tokens: float = 15.6e12
    seq_len: int = 0  # 0: the last pre-training batch stage's
    batch_tokens: int = 0  # 0: the last pre-training batch stage's


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: str = ""  # "": from the shards' manifest | llama3 | a tokenizer directory
    seed: int = 0
    threads: int = 0  # torch.set_num_threads (0: leave as is)
    device: str = "auto"  # auto | cpu | cuda
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    long_context: LongContextConfig = field(default_factory=LongContextConfig)
    anneal: AnnealConfig = field(default_factory=AnnealConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)


def recipe_path(name: str) -> Path:
    """training/configs/<name>.yaml, or `name` itself when it is a path (relative: to where ./bazelw was run)."""
    if Path(name).suffix in (".yaml", ".yml"):
        return user_path(name)
    found = CONFIG_DIR / f"{name}.yaml"
    if not found.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise tools_config.ConfigError(f"no recipe '{name}' in {CONFIG_DIR} (known: {', '.join(known)})")
    return found


def load_recipe(name: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A recipe from training/configs/<name>.yaml (or a YAML path) plus dotted key=value overrides."""
    return tools_config.load(Recipe, [recipe_path(name)], overrides)
