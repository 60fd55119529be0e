"""The paper-scale experiments: the 405B dry-run plan against the paper (Table 4, section 3.4, the facts sheet),
the 8B/70B plans, the rendered sbatch scripts, and refusal to run without a Slurm cluster."""

from __future__ import annotations

import dataclasses

import pytest

from experiments import llama3_8b, llama3_70b, llama3_405b, paper_plan, paper_scale
from experiments.tests.helpers import launch
from tools.config import load
from tools.paths import PACKAGE_ROOT


def config(module, *overrides):
    name = module.__name__.rsplit(".", 1)[-1]
    return load(module.Config, [PACKAGE_ROOT / "experiments/configs" / f"{name}.yaml"], [f"name={name}", *overrides])


def main_row(p):
    """The plan's row of pre-training's final batch stage (16M tokens at 8,192)."""
    return [r for r in p["rows"] if r["phase"] == "pretrain"][-1]


@pytest.fixture(scope="module")
def plan405():
    return paper_plan.plan(config(llama3_405b))


def test_405b_plan_matches_the_paper(plan405):
    p = plan405
    assert p["params"] == 405_853_388_800 and p["gpus"] == 16_384  # facts sheet; Table 4's middle row
    pre = [r for r in p["rows"] if r["phase"] == "pretrain"]
    # 4M tokens at 4,096 -> 8M at 8,192 after 252M -> 16M after 2.87T (section 3.4.1).
    assert [(r["seq"], r["batch"]) for r in pre] == [(4096, 4 * 2**20), (8192, 8 * 2**20), (8192, 16 * 2**20)]
    assert [b.tokens for b in p["recipe"].pretrain.batch] == [0, 252_000_000, 2_870_000_000_000]
    main = pre[-1]
    assert main["layout"] == {"tp": 8, "cp": 1, "pp": 16, "dp": 128}  # Table 4
    assert main["planner"]["sequences_per_dp_rank"] == 16 and main["mfu"] == pytest.approx(0.404, abs=0.001)
    assert main["fits"] and main["memory_gib"] < 80
    lr, optim = p["recipe"].pretrain.lr, p["recipe"].pretrain.optim
    assert (optim.lr, lr.warmup_steps, lr.decay_steps, lr.final_lr) == (8e-5, 8000, 1_200_000, 8e-7)
    # Six long-context stages to 128K, ~800B tokens; at 128K, CP 16 (Table 4's last row; DP 8 makes 16,384).
    long = [r for r in p["rows"] if r["phase"].startswith("long_context")]
    assert len(long) == 6 and long[-1]["seq"] == 131_072
    assert sum(r["tokens"] for r in long) == pytest.approx(800e9, rel=0.001)
    assert long[-1]["layout"] == {"tp": 8, "cp": 16, "pp": 16, "dp": 8}
    anneal = p["rows"][-1]
    assert (anneal["phase"], anneal["tokens"], anneal["seq"]) == ("anneal", 40_000_000, 131_072)
    assert p["recipe"].anneal.train.lr.final_lr == 0.0 and p["recipe"].anneal.average >= 2
    # 15.6T tokens and 3.8e25 FLOPs (6ND); with attention the FLOPs are higher; ~2.5 months at 400 TFLOPs.
    assert p["tokens"] == pytest.approx(15.6e12, rel=0.005)
    assert p["flops_6nd"] == pytest.approx(3.8e25, rel=0.01) and p["flops"] > p["flops_6nd"]
    assert 60 < p["days"] < 90
    speed = main["planner"]["tokens_per_s"]
    assert main["days"] == pytest.approx(main["tokens"] / speed / 86400)
    jobs = p["jobs"]
    assert (jobs["pretrain"].nodes, jobs["pretrain"].gpus_per_node, jobs["pretrain"].tasks_per_node) == (2048, 8, 8)
    assert jobs["curate"].gpus == 0 and not p["eval_fits"]  # 812 GB of bf16 weights: not on one GPU


def test_table4_first_row_and_mfu_override(plan405):
    p = paper_plan.plan(config(llama3_405b, "stage_slurm.pretrain.nodes=1024", "stage_slurm.long_context.nodes=1024",
                               "stage_slurm.anneal.nodes=1024", "recipe_overrides=[plan.tflops=430]"))  # fmt: skip
    main = main_row(p)
    assert p["gpus"] == 8192 and main["layout"] == {"tp": 8, "cp": 1, "pp": 16, "dp": 64}
    assert main["mfu"] == pytest.approx(0.43, abs=0.005)
    slower = paper_plan.plan(config(llama3_405b, "mfu=0.2"))
    base = plan405
    assert slower["days"] == pytest.approx(base["days"] * main_row(base)["mfu"] / 0.2, rel=1e-6)
    with pytest.raises(ValueError, match="stage_slurm.anneal gives 8 GPUs"):
        paper_plan.plan(config(llama3_405b, "stage_slurm.anneal.nodes=1"))


def test_8b_and_70b_plans():
    p8, p70 = paper_plan.plan(config(llama3_8b)), paper_plan.plan(config(llama3_70b))
    assert p8["params"] == 8_030_261_248 and p70["params"] == 70_553_706_496
    assert (p8["recipe"].pretrain.optim.lr, p70["recipe"].pretrain.optim.lr) == (3e-4, 1.5e-4)  # Table 3
    assert main_row(p8)["layout"] == {"tp": 1, "cp": 1, "pp": 1, "dp": 1024}
    assert main_row(p70)["layout"] == {"tp": 8, "cp": 1, "pp": 4, "dp": 128}
    assert p8["eval_fits"] and not p70["eval_fits"]
    assert p8["flops_6nd"] == pytest.approx(6 * 8.03e9 * 15.6e12, rel=0.01)


def test_posttrain_stages_are_planned_with_the_papers_values(plan405):
    for module in (llama3_8b, llama3_70b, llama3_405b):
        pt = config(module).posttrain
        assert (pt.rounds, pt.sft.lr, pt.dpo.train.lr, pt.dpo.beta, pt.dpo.nll_coef) == (6, 1e-5, 1e-5, 0.1, 0.2)
        assert 8500 <= pt.sft.steps <= 9000 and 10 <= pt.sampling.k <= 30  # section 4.1.3 (405B); 4.2.2
    names = [s.name for s in llama3_405b.stages(config(llama3_405b))]
    assert names[:8] == [*paper_scale.STAGES, "chat_data"] and names[-1] == "round6/average"
    jobs = plan405["posttrain_jobs"]
    assert list(jobs) == names[7:] and len(jobs) == 2 + 6 * 5
    gpus = (jobs["round6/dpo"].gpus, jobs["round1/rejection_sampling"].gpus, jobs["round3/average"].gpus)
    assert gpus == (1024, 256, 0)
    assert jobs["round2/sft"] == dataclasses.replace(jobs["round1/sft"], stage="round2/sft")


def test_dry_run_prints_the_plan_and_sbatch_scripts(checkout):
    out = launch(checkout, "--dry-run", "data.input=assets:web", "data.tasks=0", experiment="llama3_405b")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in ("8 x 1 x 16 x 128", "8 x 16 x 16 x 8", "16,384 GPUs", "= 3.8e+25", "40.4% MFU",
                   "total         54.00 GiB: fits in 80 GB", "segment 2 (minhash)",
                   "== Post-training (paper section 4) ==", "sft           LR 1e-05, 9,000 steps",
                   "dpo           LR 1e-05, beta 0.1, NLL 0.2"):  # fmt: skip
        assert needle in text, needle
    scripts = text.split("== sbatch scripts ==")[1]
    pretrain = scripts.split("--- pretrain:")[1].split("--- long_context:")[0]
    for line in ("#SBATCH --nodes=2048", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8",
                 "#SBATCH --signal=USR2@90", "#SBATCH --time=2880", "srun --unbuffered"):  # fmt: skip
        assert line in pretrain, line
    assert "#SBATCH --gpus-per-node" not in scripts.split("--- curate:")[1].split("--- tokenizer:")[0]
    dpo = scripts.split("--- round1/dpo:")[1].split("--- round1/average:")[0]
    assert "#SBATCH --nodes=128" in dpo and "runs/llama3_405b/<run-id>/logs/round1/dpo" in dpo
    # The folder's 17 files (WARC, WET, JSONL, HTML, ARC, and a NOTES.md the read step skips by name): one task each.
    assert "#SBATCH --array=0-16%17" in scripts and f"runs/llama3_405b/{'<run-id>'}/logs/pretrain" in pretrain
    assert not (checkout / "runs").exists()


def test_refusal_reasons(monkeypatch, tmp_path):
    cfg = config(llama3_405b, "data.input=/crawl")
    assert "executor=local would run them on this machine" in paper_scale.refusal(config(llama3_405b, "executor=local"))
    assert "executor=debug" in paper_scale.refusal(config(llama3_405b, "executor=debug"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sinfo
    assert "no Slurm cluster answers here" in paper_scale.refusal(cfg)
    with pytest.raises(SystemExit, match="Use --dry-run to print the plan"):
        paper_scale.preflight(cfg)
    for name in ("srun", "sinfo"):
        (tmp_path / name).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / name).chmod(0o755)
    assert paper_scale.refusal(cfg) is None  # a cluster answers
    assert "data.input is empty" in paper_scale.refusal(config(llama3_405b))


@pytest.mark.parametrize("executor", ["auto", "debug"])
def test_running_without_a_cluster_is_refused(checkout, monkeypatch, tmp_path, executor):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sinfo").write_text("#!/bin/sh\nexit 1\n")  # Slurm installed, no controller answering
    (fake / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    out = launch(checkout, "run_id=r", f"executor={executor}", "data.input=/crawl", experiment="llama3_8b")
    assert out.returncode != 0
    assert "llama3_8b runs its stages only as Slurm jobs" in out.stderr and "--dry-run" in out.stderr, out.stderr
    assert not (checkout / "runs").exists()  # refused by preflight, before any run directory
