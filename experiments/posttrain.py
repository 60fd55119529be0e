"""Post-training (paper section 4) as stages of the experiment DAG, after the anneal.

    chat_data -> round0/sft -> per round r = 1..N:
        round<r>/reward_model -> round<r>/rejection_sampling -> round<r>/sft -> round<r>/dpo -> round<r>/average

chat_data        the annotated data: the synthetic chat task (data/synthetic_chat.py), its SFT dialogs with planted
                 faults curated by data/posttrain/sft_curation.py (what SFT trains on is the curated set), its
                 graded preference pairs (round 0) with planted malformed records read with on_error="skip" (what
                 the reward model trains on is what the reader keeps), a held-out split for every evaluation
round0/sft       SFT of the annotated dialogs on the pre-trained model: the first chat policy
reward_model     the current policy with a scalar head, trained on ALL preferences so far (only the strengths
                 "significantly better" and "better"); held-out pairwise accuracy
rejection_sampling  K samples per prompt from the current policy, scored by the reward model plus a bonus for a
                 verified answer (every problem here is checkable); the best verified response of each prompt is
                 the round's SFT data, best vs worst its preference pairs. The same on held-out
                 prompts, for evaluation: the share whose reward-model-best response is correct against a random
                 pick from the same K, and held-out pairs for DPO's margin
sft              the pre-trained model finetuned on the annotated dialogs plus every round's rejection samples
dpo              DPO from the round's SFT model on the LATEST round's pairs, reference log-probs precomputed;
                 `runs.dpo` runs (seeds) to average, and a probe run without the NLL term
average          the round's DPO runs averaged (training.posttrain.averaging): the round's policy

Averaging at every stage (section 4): the reward model, SFT and DPO each train `runs.<stage>` runs that differ in
their data (the seed of the source mix and of the data order) from the same start, and the stage's model is
their mean; with one run it is that run's model.

Every stage writes its data, models and metrics under stages/round<r>/<stage>/ and returns a typed record
(experiments/records.py). The experiment's config holds `posttrain: PosttrainConfig` (paper values by default)
and a stage `anneal` whose workdir has the pre-trained model in model/.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from data.posttrain.sft_curation import SFTCurationConfig
from data.synthetic_chat import ChatTaskConfig, Problem, is_correct, prompt, read_problems
from experiments.dag import Stage, StageContext
from experiments.records import (
    AverageRecord,
    ChatDataRecord,
    DPORecord,
    DPORun,
    PhaseRun,
    RejectionSamplingRecord,
    RewardModelRecord,
    SFTRecord,
)
from training.posttrain.phase import PhaseConfig

VERIFIED_BONUS = 100.0  # added to the reward of a verified answer: any correct response outranks every wrong one


@dataclass
class SamplingConfig:
    k: int = 10  # samples per prompt (the paper: 10 to 30)
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    batch_prompts: int = 8
    prompts: int = 0  # training prompts sampled per round (0: all)
    held_out_prompts: int = 0  # held-out prompts sampled for evaluation (0: all)


@dataclass
class DPOConfig:
    train: PhaseConfig = field(default_factory=lambda: PhaseConfig(lr=1e-5, per_step=64))
    beta: float = 0.1
    nll_coef: float = 0.2
    nll_probe: bool = False  # also run DPO without the NLL term in round 1 (a probe, not averaged)
    probe_every: int = 0  # steps between measurements of the held-out chosen log-prob (0: start and end)


@dataclass
class RunsConfig:
    """Runs per stage whose models are averaged into the stage's model (1: no averaging)."""

    reward_model: int = 2
    sft: int = 2
    dpo: int = 2


@dataclass
class PosttrainConfig:
    """Post-training rounds; defaults are the paper's (section 4.1) where it gives them."""

    rounds: int = 6
    runs: RunsConfig = field(default_factory=RunsConfig)
    task: ChatTaskConfig = field(default_factory=ChatTaskConfig)
    # SFT curation of the annotated dialogs (input and output are set by the chat_data stage). Semantic dedup is
    # left out by default: the task's templated dialogs sit above any useful threshold (data/posttrain/README.md).
    curation: SFTCurationConfig = field(
        default_factory=lambda: SFTCurationConfig(input="", output="", steps=["read", "clean", "apologies"])
    )
    seq_len: int = 8192  # packed SFT rows; also the longest preference sequence kept
    sft: PhaseConfig = field(default_factory=lambda: PhaseConfig(lr=1e-5, steps=9000, per_step=64))
    reward_model: PhaseConfig = field(default_factory=lambda: PhaseConfig(lr=1e-5, steps=1000, per_step=64))
    dpo: DPOConfig = field(default_factory=DPOConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval_max_new_tokens: int = 64
    eval_batch: int = 64
    threads: int = 0  # torch CPU threads (0: torch's default)


def round_of(ctx: StageContext) -> int:
    return int(ctx.name.split("/")[0].removeprefix("round"))


def policy_stage(r: int) -> str:
    """The stage whose model is the policy going into round r."""
    return "round0/sft" if r == 1 else f"round{r - 1}/average"


def stages(cfg: PosttrainConfig) -> list[Stage]:
    """The post-training stages (none when cfg.rounds is 0); the experiment provides a stage named `anneal`."""
    if cfg.rounds == 0:
        return []
    out = [Stage("chat_data", chat_data), Stage("round0/sft", sft, inputs=("chat_data", "anneal"))]
    for r in range(1, cfg.rounds + 1):
        earlier = tuple(f"round{i}/rejection_sampling" for i in range(1, r))
        rs = f"round{r}/rejection_sampling"
        out += [
            Stage(f"round{r}/reward_model", reward_model, inputs=("chat_data", policy_stage(r), *earlier)),
            Stage(rs, rejection_sampling, inputs=("chat_data", policy_stage(r), f"round{r}/reward_model")),
            Stage(f"round{r}/sft", sft, inputs=("chat_data", "anneal", "round0/sft", *earlier, rs)),
            Stage(f"round{r}/dpo", dpo, inputs=(f"round{r}/sft", rs)),
            Stage(f"round{r}/average", average, inputs=("chat_data", f"round{r}/sft", rs, f"round{r}/dpo")),
        ]
    return out


# ---------------------------------------------------------------- helpers


def _setup(ctx: StageContext) -> PosttrainConfig:
    import torch

    cfg: PosttrainConfig = ctx.config.posttrain
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return cfg


def _data(ctx: StageContext) -> ChatDataRecord:
    return ctx.record("chat_data", ChatDataRecord)


def policy_model(ctx: StageContext, stage: str) -> Path:
    if stage.endswith("/average"):
        return Path(ctx.record(stage, AverageRecord).model)
    return Path(ctx.record(stage, SFTRecord).model)


def _run(summary: dict, model: Path) -> PhaseRun:
    return PhaseRun(steps=summary["steps"], loss=summary["loss"], seconds=summary["seconds"], model=str(model))


def _export(model, tok, path: Path) -> Path:
    from model.checkpoint import save_model

    return save_model(model, tok, path)


def _phase_runs(workdir: Path, n: int, seed: int, train_one) -> list[PhaseRun]:
    """n runs, `train_one(seed, out) -> PhaseRun` in out = workdir/run<i> with seed + i. A finished run's record
    is kept in run<i>/run.json, so a resumed stage skips it (an unfinished one resumes from its checkpoint)."""
    import dataclasses
    import json

    from tools import atomic

    runs = []
    for i in range(n):
        done = workdir / f"run{i}" / "run.json"
        if done.is_file():
            runs.append(PhaseRun(**json.loads(done.read_text())))
            continue
        runs.append(train_one(seed + i, workdir / f"run{i}"))
        atomic.write_json(done, dataclasses.asdict(runs[-1]))
    return runs


def _average(paths: list[Path], out: Path) -> Path:
    """The runs' models averaged into out (training.posttrain.averaging); one run: its own model."""
    from model.checkpoint import load_model
    from training.posttrain.averaging import average_into

    if len(paths) == 1:
        return paths[0]
    model, tok = load_model(paths[0])
    return _export(average_into(model, paths), tok, out)


def exact_match(model, tok, problems: list[Problem], cfg: PosttrainConfig) -> float:
    """Share of problems whose greedy response has the right final number."""
    from model.generate import generate

    model.eval()
    right = 0
    for i in range(0, len(problems), cfg.eval_batch):
        chunk = problems[i : i + cfg.eval_batch]
        prompts = [tok.encode_chat(prompt(p)) for p in chunk]
        outs = generate(model, prompts, max_new_tokens=cfg.eval_max_new_tokens, stop_tokens=tok.stop_tokens)
        right += sum(is_correct(p, tok.decode(o)) for p, o in zip(chunk, outs))
    return right / max(1, len(problems))


def _fits(ids_list, seq_len: int) -> bool:
    return all(len(ids) <= seq_len for ids in ids_list)


# ---------------------------------------------------------------- the stages


def chat_data(ctx: StageContext) -> ChatDataRecord:
    import dataclasses
    from collections import Counter

    from data.dialogs import read_dialogs, read_preferences, write_jsonl
    from data.posttrain.scorers import APOLOGY, EMOJI
    from data.posttrain.sft_curation import curate, write_outputs
    from data.synthetic_chat import plant_faults, plant_preference_faults, write

    cfg = _setup(ctx)
    files = write(cfg.task, ctx.workdir / "data")
    # The annotated dialogs with planted faults, curated: SFT trains on what curation keeps.
    raw, planted = plant_faults(read_dialogs(files["sft"]).records, ctx.workdir / "data" / "sft_raw.jsonl",
                                cfg.task.seed, long_line=cfg.curation.read.max_line_bytes + 1)  # fmt: skip
    curation = dataclasses.replace(cfg.curation, input=str(raw), output=str(ctx.workdir / "data" / "sft_curated.jsonl"))
    items, stats = curate(curation)
    if not stats["funnel_ok"]:
        raise RuntimeError(f"SFT curation broke its funnel: {stats['funnel_errors']}")
    write_outputs(curation, items, stats)
    files["sft"] = Path(curation.output)
    replies = [m["content"] for it in items for m in it.dialog.messages if m["role"] == "assistant"]
    # The preference pairs with planted malformed records: the reader counts and drops them by reason.
    raw_prefs, prefs_planted = plant_preference_faults(
        read_preferences(files["preferences_train"]).records,
        ctx.workdir / "data" / "preferences_raw.jsonl",
        cfg.task.seed,
    )
    read = read_preferences(raw_prefs, on_error="skip")
    prefs = read.records
    files["preferences_train"] = write_jsonl(ctx.workdir / "data" / "preferences_curated.jsonl", prefs)
    return ChatDataRecord(
        train=cfg.task.train,
        held_out=cfg.task.held_out,
        sft_dialogs=len(items),
        preferences=dict(sorted(Counter(p.strength for p in prefs).items())),
        files={k: str(v) for k, v in files.items()},
        planted=planted,
        curation_in=stats["dialogs_in"],
        curation_dropped=stats["dropped_by_reason"],
        emoji_replies_kept=sum(bool(EMOJI.search(r)) for r in replies),
        apologetic_kept=sum(bool(APOLOGY.search(r)) for r in replies),
        preferences_planted=prefs_planted,
        preferences_dropped=read.dropped,
    )


def sft(ctx: StageContext) -> SFTRecord:
    """The pre-trained model finetuned on the annotated dialogs (round 0) plus every round's rejection samples;
    `runs.sft` runs with different source mixes and data orders, averaged."""
    import dataclasses

    from data.dialogs import read_dialogs
    from model.checkpoint import TOKENIZER_DIR, load_model
    from model.dialog import encode_dialog
    from model.tokenizer import Tokenizer
    from training.posttrain.phase import fit
    from training.posttrain.sft import SFTLoss, Source, collate_rows, mix, pack_dialogs

    cfg, r, data = _setup(ctx), round_of(ctx), _data(ctx)
    pretrained, max_len = ctx.input("anneal") / "model", cfg.seq_len + cfg.eval_max_new_tokens
    held_out = read_problems(data.files["problems_held_out"])
    if r == 0:  # the pre-trained model's exact match, measured once (later rounds read it from round 0)
        model, tok = load_model(pretrained, max_seq_len=max_len)
        base = exact_match(model, tok, held_out, cfg)
    else:
        tok, base = Tokenizer.load(pretrained / TOKENIZER_DIR), ctx.record("round0/sft", SFTRecord).base_exact_match
    sources = [Source("annotated", read_dialogs(data.files["sft"]).records)]
    for i in range(1, r + 1):
        rs = ctx.record(f"round{i}/rejection_sampling", RejectionSamplingRecord)
        sources.append(Source(f"round{i}", read_dialogs(rs.sft_file).records))
    dialogs, counts = mix(sources, seed=cfg.sft.seed)
    encoded = [encode_dialog(tok, d.messages) for d in dialogs]
    dropped = sum(pack_dialogs(encoded, cfg.seq_len, tok.pad_id or 0).dropped.values())  # too long for a row

    def train_one(seed: int, out: Path) -> PhaseRun:
        model, tok = load_model(pretrained, max_seq_len=max_len)
        order = random.Random(seed).sample(range(len(encoded)), len(encoded))  # each run packs its own rows
        packed = pack_dialogs([encoded[i] for i in order], cfg.seq_len, tok.pad_id or 0)
        phase = dataclasses.replace(cfg.sft, seed=seed)
        summary = fit(model, packed.rows, collate_rows, SFTLoss(), phase, out / "train", "sft")
        return _run(summary, _export(model, tok, out / "model"))

    runs = _phase_runs(ctx.workdir, cfg.runs.sft, cfg.sft.seed, train_one)
    path = _average([Path(x.model) for x in runs], ctx.workdir / "model")
    model, tok = load_model(path, max_seq_len=max_len)
    return SFTRecord(
        round=r,
        runs=tuple(runs),
        model=str(path),
        dialogs=len(dialogs),
        by_source=counts,
        dropped=dropped,
        exact_match=exact_match(model, tok, held_out, cfg),
        base_exact_match=base,
    )


def load_reward_model(path: Path):
    """A RewardModel saved by the reward_model stage: backbone in model/, head in head.safetensors."""
    from safetensors.torch import load_file

    from model.checkpoint import load_model
    from training.posttrain.reward import RewardModel

    backbone, tok = load_model(path / "model")
    rm = RewardModel(backbone)
    rm.head.load_state_dict(load_file(str(path / "head.safetensors")))
    return rm.eval(), tok


def _save_reward_model(rm, tok, out: Path) -> Path:
    from safetensors.torch import save_file

    _export(rm.backbone, tok, out / "model")
    save_file({k: v.contiguous() for k, v in rm.head.state_dict().items()}, str(out / "head.safetensors"))
    return out


def reward_model(ctx: StageContext) -> RewardModelRecord:
    """The current policy with a scalar head on every preference so far; `runs.reward_model` runs with different
    data orders from the same head initialisation, averaged (backbone and head)."""
    import dataclasses

    import torch
    from safetensors.torch import save_file

    from data.dialogs import read_preferences
    from model.checkpoint import TOKENIZER_DIR, load_model
    from model.tokenizer import Tokenizer
    from training.posttrain.averaging import average_models
    from training.posttrain.phase import fit
    from training.posttrain.reward import (
        RewardLoss,
        RewardModel,
        collate_ranked,
        encode_ranked,
        filter_strength,
        pairwise_accuracy,
    )

    cfg, r, data = _setup(ctx), round_of(ctx), _data(ctx)
    policy = policy_model(ctx, policy_stage(r))
    tok = Tokenizer.load(policy / TOKENIZER_DIR)  # the model itself is loaded by each run
    prefs = read_preferences(data.files["preferences_train"]).records
    for i in range(1, r):
        prefs += read_preferences(
            ctx.record(f"round{i}/rejection_sampling", RejectionSamplingRecord).preferences_file
        ).records
    used, dropped = filter_strength(prefs)
    groups = [g for g in (encode_ranked(tok, p) for p in used) if _fits(g.seqs, cfg.seq_len)]
    pad = tok.pad_id or 0

    def train_one(seed: int, out: Path) -> PhaseRun:
        backbone, tok = load_model(policy)
        torch.manual_seed(cfg.task.seed)  # the head's initialisation: the same in every run
        rm = RewardModel(backbone)
        phase = dataclasses.replace(cfg.reward_model, seed=seed)
        summary = fit(rm, groups, lambda chunk: collate_ranked(chunk, pad), RewardLoss(), phase, out / "train",
                      "reward_model")  # fmt: skip
        _save_reward_model(rm, tok, out)
        return _run(summary, out / "model")

    runs = _phase_runs(ctx.workdir, cfg.runs.reward_model, cfg.reward_model.seed, train_one)
    dirs = [Path(x.model).parent for x in runs]
    if len(dirs) > 1:  # the mean of the backbones and of the heads
        _average([d / "model" for d in dirs], ctx.workdir / "model")
        save_file(average_models([d / "head.safetensors" for d in dirs]), str(ctx.workdir / "head.safetensors"))
        dirs = [ctx.workdir]
    rm, _ = load_reward_model(dirs[0])
    held, _ = filter_strength(read_preferences(data.files["preferences_held_out"]).records)
    held_groups = [encode_ranked(tok, p) for p in held]
    batches = [collate_ranked(held_groups[i : i + 32], pad) for i in range(0, len(held_groups), 32)]
    return RewardModelRecord(
        round=r,
        runs=tuple(runs),
        model=str(dirs[0]),
        preferences=len(groups),
        dropped=dropped,
        held_out_accuracy=pairwise_accuracy(rm, batches),
        held_out_pairs=sum(len(b.better) for b in batches),
    )


def rejection_sampling(ctx: StageContext) -> RejectionSamplingRecord:
    from data.dialogs import write_jsonl
    from model.checkpoint import load_model
    from training.posttrain import rejection_sampling as rs

    cfg, r, data = _setup(ctx), round_of(ctx), _data(ctx)
    s = cfg.sampling
    policy, tok = load_model(policy_model(ctx, policy_stage(r)))
    policy.eval()
    rm, _ = load_reward_model(Path(ctx.record(f"round{r}/reward_model", RewardModelRecord).model))
    rm_score = rs.reward_scorer(rm, tok)
    rs_cfg = rs.RejectionSamplingConfig(k=s.k, temperature=s.temperature, top_p=s.top_p,
                                        max_new_tokens=s.max_new_tokens, batch_prompts=s.batch_prompts,
                                        seed=cfg.task.seed * 1000 + r)  # fmt: skip

    def sample(problems: list[Problem]) -> tuple[list, list[tuple[list[float], list[bool]]]]:
        """The scored prompts, and per scored prompt its RM rewards and verdicts (in the same order: a prompt
        without a finished response is neither scored nor kept)."""
        by_question, seen = {p.question: p for p in problems}, []

        def score(messages: list[dict], responses: list[str]) -> list[float]:
            rewards = rm_score(messages, responses)
            ok = [is_correct(by_question[messages[-1]["content"]], x) for x in responses]
            seen.append((list(rewards), ok))
            return [x + VERIFIED_BONUS * o for x, o in zip(rewards, ok)]

        return rs.rejection_sample(policy, tok, [prompt(p) for p in problems], score, rs_cfg)[0], seen

    start = time.time()
    train = read_problems(data.files["problems_train"])
    scored, seen = sample(random.Random(f"{cfg.task.seed}/{r}").sample(train, s.prompts or len(train)))
    seconds = time.time() - start
    # SFT data only where the best response is verified; preference pairs wherever best and worst differ.
    verified = [x for x, (_, ok) in zip(scored, seen) if ok[x.best]]
    dialogs, (prefs, _) = rs.to_sft(verified, r), rs.to_preferences(scored, r)
    # The same on held-out problems, for evaluation only: best-of-K by the reward model alone against a random
    # pick from the same K (a prompt without a finished response counts as wrong), and held-out pairs for DPO.
    held_out = read_problems(data.files["problems_held_out"])[: s.held_out_prompts or None]
    held_scored, held_seen = sample(held_out)
    best = [ok[max(range(len(rw)), key=rw.__getitem__)] for rw, ok in held_seen]
    n = max(1, len(held_out))
    return RejectionSamplingRecord(
        round=r,
        prompts=len(seen),
        k=s.k,
        sft_dialogs=len(dialogs),
        preferences=len(prefs),
        best_of_k=sum(best) / n,
        random_pick=sum(sum(ok) / len(ok) for _, ok in held_seen) / n,
        any_correct=sum(any(ok) for _, ok in held_seen) / n,
        seconds_sampling=seconds,
        sft_file=str(write_jsonl(ctx.workdir / "sft.jsonl", dialogs)),
        preferences_file=str(write_jsonl(ctx.workdir / "preferences.jsonl", prefs)),
        held_out_preferences_file=str(
            write_jsonl(ctx.workdir / "preferences_held_out.jsonl", rs.to_preferences(held_scored, r)[0])
        ),
    )


def _held_out_pairs(tok, rs: RejectionSamplingRecord, seq_len: int) -> list:
    """The round's held-out pairs (best vs worst sample of held-out prompts), encoded for DPO."""
    from data.dialogs import read_preferences
    from training.posttrain.dpo import encode_pair

    held = read_preferences(rs.held_out_preferences_file).records
    pairs = [encode_pair(tok, p.prompt, p.chosen, p.rejected) for p in held]
    return [p for p in pairs if _fits((p.chosen, p.rejected), seq_len)]


def logps(model, pairs: list, pad: int) -> tuple[float, float]:
    """Mean sequence log-prob of the chosen and of the rejected responses (content tokens only); NaN without pairs."""
    import torch

    if not pairs:
        return math.nan, math.nan

    from training.posttrain.dpo import collate_pairs, sequence_logps

    was = model.training
    model.eval()
    b = collate_pairs(pairs, pad)
    with torch.no_grad():
        seq = sequence_logps(model, b.tokens, b.doc_ids, b.logp_mask)
    model.train(was)
    n = len(pairs)
    return float(seq[:n].mean()), float(seq[n:].mean())


def _dpo_run(ctx: StageContext, name: str, nll_coef: float, seed: int, pairs: list, held: list) -> DPORun:
    """One DPO run from the round's SFT model; its result is kept in <name>/run.json so a resumed stage skips it."""
    import dataclasses
    import json

    from model.checkpoint import load_model
    from tools import atomic
    from training.posttrain.dpo import DPOLoss, collate_pairs
    from training.posttrain.phase import fit

    cfg, r = ctx.config.posttrain, round_of(ctx)
    out = ctx.workdir / name
    done = out / "run.json"
    if done.is_file():
        d = json.loads(done.read_text())
        return DPORun(PhaseRun(**d["run"]), d["nll_coef"], d["seed"], tuple(d["steps"]), tuple(d["chosen_logp"]),
                      tuple(d["rejected_logp"]))  # fmt: skip
    model, tok = load_model(Path(ctx.record(f"round{r}/sft", SFTRecord).model))
    pad = tok.pad_id or 0
    every = cfg.dpo.probe_every
    curve = [(0, *logps(model, held, pad))]

    def probe() -> None:
        curve.append((every * len(curve), *logps(model, held, pad)))

    train = dataclasses.replace(cfg.dpo.train, seed=seed)
    summary = fit(model, pairs, lambda chunk: collate_pairs(chunk, pad), DPOLoss(cfg.dpo.beta, nll_coef), train,
                  out / "train", f"dpo_{name}", validate=probe if every else None, valid_every=every)  # fmt: skip
    if curve[-1][0] != summary["steps"]:
        curve.append((summary["steps"], *logps(model, held, pad)))
    steps, chosen, rejected = zip(*curve)
    run = DPORun(_run(summary, _export(model, tok, out / "model")), nll_coef, seed, steps, chosen, rejected)
    atomic.write_json(done, dataclasses.asdict(run))
    return run


def dpo(ctx: StageContext) -> DPORecord:
    from data.dialogs import read_preferences
    from model.checkpoint import load_model
    from training.posttrain.dpo import encode_pair, reference_logps

    cfg, r = _setup(ctx), round_of(ctx)
    model, tok = load_model(Path(ctx.record(f"round{r}/sft", SFTRecord).model))
    rs = ctx.record(f"round{r}/rejection_sampling", RejectionSamplingRecord)
    prefs = read_preferences(rs.preferences_file).records  # the latest round's pairs only
    pairs = [encode_pair(tok, p.prompt, p.chosen, p.rejected) for p in prefs]
    pairs = reference_logps(
        model, [p for p in pairs if _fits((p.chosen, p.rejected), cfg.seq_len)], pad_id=tok.pad_id or 0
    )
    if not pairs:
        raise RuntimeError(f"round {r}: rejection sampling gave no preference pairs (see {rs.preferences_file})")
    del model  # the reference log-probs travel in the pairs
    held = _held_out_pairs(tok, rs, cfg.seq_len)
    seed = cfg.dpo.train.seed
    runs = tuple(_dpo_run(ctx, f"run{i}", cfg.dpo.nll_coef, seed + i, pairs, held) for i in range(cfg.runs.dpo))
    probe = _dpo_run(ctx, "no_nll", 0.0, seed, pairs, held) if cfg.dpo.nll_probe and r == 1 else None
    return DPORecord(round=r, pairs=len(pairs), runs=runs, probe=probe)


def average(ctx: StageContext) -> AverageRecord:
    from model.checkpoint import load_model

    cfg, r, data = _setup(ctx), round_of(ctx), _data(ctx)
    sft_rec = ctx.record(f"round{r}/sft", SFTRecord)
    paths = [Path(x.run.model) for x in ctx.record(f"round{r}/dpo", DPORecord).runs]
    path = _average(paths, ctx.workdir / "model")
    model, tok = load_model(path)
    held_out = read_problems(data.files["problems_held_out"])
    rs = ctx.record(f"round{r}/rejection_sampling", RejectionSamplingRecord)
    pairs, pad = _held_out_pairs(tok, rs, cfg.seq_len), tok.pad_id or 0
    sft_model, _ = load_model(Path(sft_rec.model))
    chosen, rejected = logps(model, pairs, pad)
    sft_chosen, sft_rejected = logps(sft_model, pairs, pad)
    return AverageRecord(
        round=r,
        averaged=tuple(map(str, paths)),
        model=str(path),
        exact_match=exact_match(model, tok, held_out, cfg),
        sft_exact_match=sft_rec.exact_match,
        margin=chosen - rejected,
        sft_margin=sft_chosen - sft_rejected,
    )
