"""Kernel benchmarks at Llama 3 8B shapes: forward+backward time of each kernel against eager PyTorch,
torch.compile and Liger-Kernel (when installed); attention against SDPA's FlashAttention (causal) and
FlashAttention varlen (documents) on the same masks; peak memory of the fused linear cross-entropy.

    ./bazelw run //kernels:bench -- out=/tmp/kernels_bench.json     # a GPU machine: <= 5 minutes on an H100
    ./bazelw run //kernels:bench -- tiny=true                       # CPU: tiny shapes in Triton's interpreter

Each row times `iters` forward+backward passes after `warmup` ones (CUDA events), prints time and ratios
(peer time / kernel time: > 1 means the kernel is faster) and checks the kernel's output against eager.
A peer that fails or is missing is reported with its reason; peers past `time_budget_s` are skipped
(the kernels never are).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field

OPS = ["attention", "cross_entropy", "rmsnorm", "swiglu", "rope"]


@dataclass
class BenchConfig:
    tiny: bool = False  # tiny shapes on CPU in Triton's interpreter (tests the script; timings meaningless)
    tokens: int = 8192  # one packed row of 8K tokens
    dim: int = 4096
    n_heads: int = 32
    n_kv_heads: int = 8
    ffn_hidden: int = 14336
    vocab: int = 128256
    mean_doc_len: int = 1024  # documents packed in the row, for the document-masked attention
    ops: list[str] = field(default_factory=lambda: list(OPS))
    warmup: int = 3
    iters: int = 10
    compile: bool = True  # include torch.compile peers
    time_budget_s: float = 270.0
    seed: int = 0
    out: str = ""  # results as JSON (every figure); empty: print only


TINY = dict(tokens=96, dim=64, n_heads=4, n_kv_heads=2, ffn_hidden=96, vocab=300, mean_doc_len=10, warmup=1, iters=1)


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.deadline


def timed_ms(fn, cfg: BenchConfig, device) -> float:
    import torch

    for _ in range(cfg.warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(cfg.iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / cfg.iters
    t0 = time.perf_counter()
    for _ in range(cfg.iters):
        fn()
    return (time.perf_counter() - t0) * 1000 / cfg.iters


def peak_mib(fn, device) -> float | None:
    """Peak memory above what was allocated before (inputs), for one forward+backward."""
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def fwd_bwd(forward, inputs, grad):
    """A callable running forward(*inputs) and the gradients of all inputs for the output gradient `grad`."""
    import torch

    def run():
        out = forward(*inputs)
        return out, torch.autograd.grad(out, inputs, grad if out.dim() else None)

    return run


def run_op(name: str, variants: dict, cfg, device, budget: Budget, memory: bool = False, **info) -> dict:
    """Time every variant (the first is the kernel), compare outputs with eager, print a table."""
    import torch

    row = {"ms": {}, "speedup": {}, "skipped": {}, **info}
    if memory:
        row["peak_mib"] = {}
    outputs = {}
    for variant, make in variants.items():
        if variant != "triton" and not budget.left():  # the kernel itself always runs
            row["skipped"][variant] = "time budget exhausted"
            continue
        try:
            fn = make()  # a reason string: the peer is unavailable
            if isinstance(fn, str):
                row["skipped"][variant] = fn
                continue
            outputs[variant] = fn()[0].detach().float()
            row["ms"][variant] = round(timed_ms(fn, cfg, device), 4)
            if memory:
                row["peak_mib"][variant] = peak_mib(fn, device)
        except Exception as e:  # a failing peer is a result, not a crash
            row["skipped"][variant] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ours = row["ms"].get("triton")
    for variant, ms in row["ms"].items():
        if variant != "triton" and ours:
            row["speedup"][variant] = float(f"{ms / ours:.4g}")
    if "triton" in outputs:
        row["max_abs_diff"] = {
            v: float((outputs["triton"] - o).abs().max())
            for v, o in outputs.items()
            if v != "triton" and o.shape == outputs["triton"].shape
        }
    if memory and row["peak_mib"].get("triton") and row["peak_mib"].get("eager"):
        row["memory_ratio_vs_eager"] = round(row["peak_mib"]["triton"] / row["peak_mib"]["eager"], 4)
    print(f"\n{name}  {info.get('shape', '')}")
    for variant in variants:
        if variant in row["ms"]:
            mem = f"  peak {row['peak_mib'][variant]:.0f} MiB" if memory and row["peak_mib"].get(variant) else ""
            ratio = f"  x{row['speedup'][variant]:.2f}" if variant in row["speedup"] else ""
            print(f"  {variant:<16} {row['ms'][variant]:10.3f} ms{ratio}{mem}")
        else:
            print(f"  {variant:<16} skipped: {row['skipped'].get(variant)}")
    return row


def liger(attr_path: str):
    """A Liger-Kernel object, or None when Liger is not installed."""
    try:
        import importlib

        module, attr = attr_path.rsplit(".", 1)
        return getattr(importlib.import_module(module), attr)
    except ImportError:
        return None


def bench_rmsnorm(cfg, device, dtype, budget):
    import torch

    from kernels import reference, rms_norm

    weight = torch.ones(cfg.dim, device=device, dtype=dtype, requires_grad=True)
    x = torch.randn(cfg.tokens, cfg.dim, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn_like(x)
    inputs = (x, weight)
    LigerRMSNorm = liger("liger_kernel.transformers.LigerRMSNorm")

    def liger_variant():
        if LigerRMSNorm is None:
            return "Liger-Kernel not installed"
        mod = LigerRMSNorm(cfg.dim, eps=1e-5).to(device, dtype)
        return fwd_bwd(lambda x, w: mod(x), (x, mod.weight), g)

    variants = {
        "triton": lambda: fwd_bwd(lambda x, w: rms_norm(x, w, 1e-5), inputs, g),
        "eager": lambda: fwd_bwd(lambda x, w: reference.rms_norm(x, w, 1e-5), inputs, g),
        "compile": lambda: (
            fwd_bwd(torch.compile(lambda x, w: reference.rms_norm(x, w, 1e-5)), inputs, g)
            if cfg.compile
            else "compile=false"
        ),
        "liger": liger_variant,
    }
    return run_op("rmsnorm", variants, cfg, device, budget, shape=[cfg.tokens, cfg.dim])


def document_ids(cfg, device):
    """Packed documents with lengths drawn around mean_doc_len (some of length 1), as one row [1, T]."""
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    lengths, total = [], 0
    while total < cfg.tokens:
        n = (
            1
            if len(lengths) % 7 == 3
            else max(1, int(torch.empty(1).exponential_(1 / cfg.mean_doc_len, generator=gen)))
        )
        lengths.append(min(n, cfg.tokens - total))
        total += lengths[-1]
    doc_ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return doc_ids[None].to(device), lengths


def bench_rope(cfg, device, dtype, budget):
    import torch

    from kernels import reference, rope_

    hd = cfg.dim // cfg.n_heads
    cos, sin = reference.rope_angles(reference.document_positions(document_ids(cfg, device)[0]), hd)
    qp = torch.randn(1, cfg.tokens, cfg.n_heads * hd, device=device, dtype=dtype, requires_grad=True)
    kp = torch.randn(1, cfg.tokens, cfg.n_kv_heads * hd, device=device, dtype=dtype, requires_grad=True)
    shape = (1, cfg.tokens, -1, hd)

    # Every variant starts from copies of q and k (the in-place kernel needs non-leaf tensors; in the model
    # it rotates the projection outputs), so all times include the same two copies.
    def eager(qp, kp):
        q, k = qp.clone().view(shape), kp.clone().view(shape)
        return torch.cat([reference.rope(q, cos, sin).flatten(2), reference.rope(k, cos, sin).flatten(2)], -1)

    def kernel(qp, kp):
        q, k = rope_(qp.clone(), kp.clone(), cos, sin)
        return torch.cat([q, k], -1)

    g = torch.randn(1, cfg.tokens, (cfg.n_heads + cfg.n_kv_heads) * hd, device=device, dtype=dtype)
    variants = {
        "triton": lambda: fwd_bwd(kernel, (qp, kp), g),
        "eager": lambda: fwd_bwd(eager, (qp, kp), g),
        "compile": lambda: fwd_bwd(torch.compile(eager), (qp, kp), g) if cfg.compile else "compile=false",
        "liger": lambda: "Liger's RoPE rotates halves (Hugging Face layout), not Meta's adjacent pairs",
    }
    return run_op("rope (q and k, document positions)", variants, cfg, device, budget, shape=list(qp.shape))


def bench_swiglu(cfg, device, dtype, budget):
    import torch

    from kernels import reference, swiglu

    a = torch.randn(cfg.tokens, cfg.ffn_hidden, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn_like(a, requires_grad=True)
    g = torch.randn_like(a)
    silu_mul = liger("liger_kernel.ops.swiglu.LigerSiLUMulFunction")
    variants = {
        "triton": lambda: fwd_bwd(swiglu, (a, b), g),
        "eager": lambda: fwd_bwd(reference.swiglu, (a, b), g),
        "compile": lambda: fwd_bwd(torch.compile(reference.swiglu), (a, b), g) if cfg.compile else "compile=false",
        "liger": lambda: fwd_bwd(silu_mul.apply, (a, b), g) if silu_mul else "Liger-Kernel not installed",
    }
    return run_op("swiglu", variants, cfg, device, budget, shape=list(a.shape))


def _t(x):
    return x.transpose(1, 2)  # [B, T, H, D] <-> [B, H, T, D]


def _attention_case(cfg, device, budget, name, qkv, g, doc_ids, lengths):
    """One mask: doc_ids None (plain causal over the row) or [1, T] packed documents of `lengths`."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from kernels import flash_attention, reference

    T = cfg.tokens

    def flash():  # SDPA's FlashAttention backend (causal); FlashAttention varlen (documents)
        if device.type != "cuda":
            return "FlashAttention needs CUDA"
        if doc_ids is None:

            def causal(q, k, v):
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return _t(F.scaled_dot_product_attention(_t(q), _t(k), _t(v), is_causal=True, enable_gqa=True))

            return fwd_bwd(causal, qkv, g)
        from torch.nn.attention.varlen import varlen_attn

        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device=device, dtype=torch.int32)
        longest = max(lengths)

        def varlen(q, k, v):
            return varlen_attn(q[0], k[0], v[0], cu, cu, longest, longest, window_size=(-1, 0), enable_gqa=True)[None]

        return fwd_bwd(varlen, qkv, g)

    def dense_sdpa():  # the reference path (model.attention's "sdpa" backend): a dense [T, T] boolean mask
        return fwd_bwd(lambda q, k, v: reference.attention(q, k, v, doc_ids), qkv, g)

    def flex():  # torch.compile's attention: flex_attention with a block mask
        def mask_mod(b, h, qi, ki):
            return qi >= ki if doc_ids is None else (qi >= ki) & (doc_ids[b, qi] == doc_ids[b, ki])

        block = create_block_mask(mask_mod, 1, None, T, T, device=device)
        fn = torch.compile(flex_attention) if cfg.compile else flex_attention
        return fwd_bwd(lambda q, k, v: _t(fn(_t(q), _t(k), _t(v), block_mask=block, enable_gqa=True)), qkv, g)

    variants = {
        "triton": lambda: fwd_bwd(lambda q, k, v: flash_attention(q, k, v, doc_ids), qkv, g),
        "flash_attn": flash,
        "sdpa_dense_mask": dense_sdpa,
        "flex_compiled" if cfg.compile else "flex": flex,
    }
    row = run_op(f"attention, {name}", variants, cfg, device, budget, shape=list(qkv[0].shape), documents=len(lengths))
    # Visible (query, key) pairs x 4 flops per head dim forward, 10 backward (5 matmuls' worth in all: 3.5x).
    pairs = sum(n * (n + 1) // 2 for n in lengths)
    flops = 14 * pairs * cfg.n_heads * (cfg.dim // cfg.n_heads)
    row["tflops"] = {variant: round(flops / (ms * 1e9), 2) for variant, ms in row["ms"].items()}
    return row


def bench_attention(cfg, device, dtype, budget):
    import torch

    hd, T = cfg.dim // cfg.n_heads, cfg.tokens
    q = torch.randn(1, T, cfg.n_heads, hd, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(1, T, cfg.n_kv_heads, hd, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn_like(k, requires_grad=True)
    g = torch.randn_like(q)
    doc_ids, lengths = document_ids(cfg, device)
    return {
        "attention.causal": _attention_case(cfg, device, budget, "causal", (q, k, v), g, None, [T]),
        "attention.documents": _attention_case(cfg, device, budget, "documents", (q, k, v), g, doc_ids, lengths),
    }


def bench_cross_entropy(cfg, device, dtype, budget):
    import torch
    import torch.nn.functional as F

    from kernels import fused_linear_cross_entropy

    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    h = torch.randn(cfg.tokens, cfg.dim, device=device, dtype=dtype, generator=gen).requires_grad_()
    w = (torch.randn(cfg.vocab, cfg.dim, device=device, dtype=dtype, generator=gen) * cfg.dim**-0.5).requires_grad_()
    targets = torch.randint(0, cfg.vocab, (cfg.tokens,), device=device, generator=gen)
    targets[::20] = -100

    def eager(h, w):
        return F.cross_entropy((h @ w.t()).float(), targets)  # the model's head: logits, .float(), loss

    LigerFLCE = liger("liger_kernel.transformers.LigerFusedLinearCrossEntropyLoss")
    variants = {
        "triton": lambda: fwd_bwd(lambda h, w: fused_linear_cross_entropy(h, w, targets), (h, w), None),
        "eager": lambda: fwd_bwd(eager, (h, w), None),
        "compile": lambda: fwd_bwd(torch.compile(eager), (h, w), None) if cfg.compile else "compile=false",
        "liger": lambda: (
            fwd_bwd(lambda h, w: LigerFLCE()(w, h, targets), (h, w), None)
            if LigerFLCE
            else "Liger-Kernel not installed"
        ),
    }
    return run_op(
        "fused linear cross-entropy", variants, cfg, device, budget, memory=True, shape=[cfg.tokens, cfg.dim, cfg.vocab]
    )


def main(argv: list[str] | None = None) -> dict:
    from tools.config import parse
    from tools.paths import user_path

    cfg = parse(BenchConfig, sys.argv[1:] if argv is None else argv)
    if cfg.tiny:
        for key, value in TINY.items():
            setattr(cfg, key, value)
        cfg.compile = False
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel modules are imported
    unknown = set(cfg.ops) - set(OPS)
    if unknown:
        raise SystemExit(f"unknown ops {sorted(unknown)} (known: {OPS})")
    import torch

    device = torch.device("cpu" if cfg.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("the benchmark needs a CUDA GPU (or tiny=true for a CPU run in Triton's interpreter)")
    dtype = torch.float32 if cfg.tiny else torch.bfloat16  # the interpreter has no fast bf16
    torch.manual_seed(cfg.seed)
    budget = Budget(cfg.time_budget_s)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter)"
    print(
        f"device: {device_name}; torch {torch.__version__}; {cfg.tokens} tokens, dim {cfg.dim}, "
        f"heads {cfg.n_heads}/{cfg.n_kv_heads}, ffn {cfg.ffn_hidden}, vocab {cfg.vocab}"
    )
    results = {"device": device_name, "torch": torch.__version__, "config": asdict(cfg), "ops": {}}
    start = time.monotonic()
    for op in cfg.ops:
        out = globals()[f"bench_{op}"](cfg, device, dtype, budget)
        results["ops"].update(out if op == "attention" else {op: out})
    results["seconds"] = round(time.monotonic() - start, 1)
    print(f"\ndone in {results['seconds']} s")
    if cfg.out:
        from tools.atomic import write_json

        write_json(user_path(cfg.out), results)
    return results


if __name__ == "__main__":
    main()
