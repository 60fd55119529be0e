"""Initial pre-training (paper section 3.4.1): warm-up + cosine LR, token-triggered batch/sequence stages.

    summary = training.pretrain.run(recipe, workdir, shards_dir)

Resumes from the newest complete checkpoint in workdir/checkpoints. Writes workdir/metrics.jsonl,
workdir/plots/pretrain.png, workdir/model/ (model.checkpoint format) and workdir/summary.json.
"""

from __future__ import annotations

from pathlib import Path

from tools import atomic
from training.config import Recipe
from training.export import export_model, load_tokenizer
from training.trainer import Trainer


def finish(trainer: Trainer, summary: dict, workdir: Path, shards_dir, recipe: Recipe, plot: str) -> dict:
    """Validation loss, the loss/LR plot, the exported model and summary.json of a finished phase."""
    summary["valid_loss"] = trainer.validate()
    png = trainer.monitor.plot(plot)
    summary["plot"] = str(png) if png else None
    tok = load_tokenizer(recipe.tokenizer, shards_dir)
    summary["model"] = export_model(trainer.model, trainer.args, tok, workdir / "model", trainer.info.main)
    if trainer.info.main:
        atomic.write_json(workdir / "summary.json", summary)
    return summary


def run(recipe: Recipe, workdir: str | Path, shards_dir: str | Path, *, init_from: str | Path | None = None) -> dict:
    workdir = Path(workdir)
    trainer = Trainer(recipe, recipe.pretrain, workdir, shards_dir, phase="pretrain", init_from=init_from)
    try:
        summary = trainer.fit()
        return finish(trainer, summary, workdir, shards_dir, recipe, "pretrain")
    finally:
        trainer.close()
        trainer.info.close()
