"""Long-context pre-training (paper section 3.4.2): stages of growing sequence length, each ending in a gate.

    summary = training.long_context.run(recipe, workdir, shards_dir, init_from=<pre-training workdir>)

Stage i trains in workdir/stage<i>_<seq_len>/ from the previous stage's final checkpoint (weights, optimizer,
data cursors), with the stage's RoPE theta. At its end the gate checks that (a) the short-context validation
loss is within `loss_tolerance` of its value before the stage and (b) the gate function (needle in a haystack,
or passkey retrieval) reaches `threshold` at the new length. A failing stage trains `extra_tokens` more, at
most `max_extra` times, then raises GateFailed with the gate's numbers. Each stage's gate bookkeeping is in
its gate.json, so a killed run resumes mid-stage or mid-gate.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tools import atomic
from training.config import BatchStage, Recipe
from training.distributed import init
from training.export import load_tokenizer
from training.gates import resolve
from training.monitor import Monitor
from training.pretrain import finish
from training.trainer import Trainer, checkpoint_args


class GateFailed(RuntimeError):
    """A long-context stage did not pass its gate within its extra-token budget."""


def _read(path: Path, default: dict) -> dict:
    return json.loads(path.read_text()) if path.is_file() else default


def check_gate(result: dict, pre_loss: float | None, cfg) -> dict:
    """Add the verdict to a gate result {loss, accuracy}."""
    limit = None if pre_loss is None else pre_loss * (1 + cfg.loss_tolerance)
    loss_ok = limit is None or result["loss"] is None or result["loss"] <= limit
    return {
        **result,
        "pre_loss": pre_loss,
        "loss_limit": limit,
        "loss_ok": loss_ok,
        "accuracy_ok": result["accuracy"] >= cfg.threshold,
        "passed": loss_ok and result["accuracy"] >= cfg.threshold,
    }


def run(recipe: Recipe, workdir: str | Path, shards_dir: str | Path, *, init_from: str | Path) -> dict:
    lc, workdir = recipe.long_context, Path(workdir)
    if not lc.stages:
        raise ValueError("long_context.stages is empty")
    info = init(recipe.device, recipe.parallel.backend)
    tokenizer = load_tokenizer(recipe.tokenizer, shards_dir)
    if tokenizer is None:
        raise ValueError("long-context gates need a tokenizer: set recipe.tokenizer (llama3 or a tokenizer directory)")
    gate_fn = resolve(lc.gate.fn)
    base = checkpoint_args(init_from)
    short = lc.gate.short_seq_len or recipe.pretrain.batch[-1].seq_len
    default_batch = recipe.pretrain.batch[-1].batch_tokens
    previous, results = Path(init_from), []
    try:
        for i, stage in enumerate(lc.stages, 1):
            name = f"stage{i}_{stage.seq_len}"
            sdir = workdir / name
            done = _read(sdir / "DONE.json", {})
            if done:
                results.append(done)
                previous = sdir
                continue
            cfg = dataclasses.replace(
                lc.train, batch=[BatchStage(0, stage.batch_tokens or default_batch, stage.seq_len)], tokens=stage.tokens
            )
            args = dataclasses.replace(
                base, max_seq_len=max(stage.seq_len, short), rope_theta=stage.rope_theta or base.rope_theta
            )
            monitor = Monitor(workdir, recipe.monitor, info.main, f"long_context/{name}")
            trainer = Trainer(
                recipe,
                cfg,
                sdir,
                shards_dir,
                phase=f"long_context/{name}",
                init_from=previous,
                args=args,
                info=info,
                monitor=monitor,
            )
            try:
                results.append(_run_stage(trainer, stage, name, sdir, short, gate_fn, tokenizer, lc.gate, i))
                summary = finish(trainer, results[-1], sdir, shards_dir, recipe, f"long_context_{name}")
                if info.main:
                    atomic.write_json(sdir / "DONE.json", summary)
            finally:
                trainer.close()
            previous = sdir
        # final_stage is relative: the experiment spine renames a finished stage's directory.
        summary = {"stages": results, "model": results[-1].get("model"), "final_stage": previous.name}
        if info.main:
            atomic.write_json(workdir / "summary.json", summary)
        return summary
    finally:
        info.close()


def _run_stage(trainer: Trainer, stage, name, sdir, short, gate_fn, tokenizer, gcfg, index) -> dict:
    state_file = sdir / "gate.json"
    state = _read(state_file, {})
    if "pre_loss" not in state:  # before the stage's first step: the short-context reference
        state = {"pre_loss": trainer.validate(short, event=False), "extensions": 0, "gates": []}
        if trainer.info.main:
            atomic.write_json(state_file, state)
    extra = gcfg.extra_tokens or max(stage.tokens // 10, 1)
    while True:
        target = stage.tokens + state["extensions"] * extra
        summary = trainer.fit(until_tokens=target)
        result = {
            "tokens": trainer.tokens,
            "seq_len": stage.seq_len,
            "loss": trainer.validate(short, event=False),
            "accuracy": float(gate_fn(trainer.model, tokenizer, stage.seq_len, n=gcfg.n, seed=index)),
        }
        result = check_gate(result, state["pre_loss"], gcfg)
        trainer.monitor.event("gate", step=trainer.step, stage=name, **result)
        state["gates"].append(result)
        if result["passed"] or state["extensions"] >= gcfg.max_extra:
            if trainer.info.main:
                atomic.write_json(state_file, state)
            break
        state["extensions"] += 1
        if trainer.info.main:
            atomic.write_json(state_file, state)
    if not result["passed"]:
        why = []
        if not result["accuracy_ok"]:
            why.append(f"retrieval accuracy {result['accuracy']:.3f} < threshold {gcfg.threshold}")
        if not result["loss_ok"]:
            why.append(
                f"short-context ({short}) valid loss {result['loss']:.4f} > {result['loss_limit']:.4f} "
                f"(pre-stage {result['pre_loss']:.4f} + {gcfg.loss_tolerance:.1%})"
            )
        raise GateFailed(
            f"long-context stage {index} ({name}) failed its gate after {state['extensions']} extra "
            f"segment(s) of {extra} tokens: " + "; ".join(why)
        )
    return {**summary, "stage": name, "gate": result, "gates": state["gates"], "extensions": state["extensions"]}
