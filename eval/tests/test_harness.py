import json

import numpy as np
import pytest

from data.shards import ShardWriter, write_manifest
from eval import gsm8k, harness, hendrycks_math, run
from eval.tests.niah_fakes import Oracle
from model.checkpoint import save_model
from model.llama import build
from model.presets import preset
from model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.llama3()


class GoldModel:
    """Answers GSM8K and MATH prompts with the dataset's solution (in the prompt format) and NIAH prompts with the
    needle: a perfect model behind the generate-like interface. Counts its calls; can be told to crash."""

    def __init__(self, tok, crash_after: int | None = None):
        self.tok, self.crash_after, self.calls, self.prompts = tok, crash_after, 0, 0
        self.gsm = {it.question: gsm8k.gold_as_output(it) for it in gsm8k.load()}
        self.math = {it.problem: hendrycks_math.gold_as_output(it) for it in hendrycks_math.load()}
        self.niah = Oracle(tok)

    def __call__(self, prompts, *, max_new_tokens, stop_tokens=()):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.prompts += len(prompts)
        outs = []
        for p in prompts:
            text = self.tok.decode(p)
            if text.endswith("\nA:"):
                answer = self.gsm[text.rsplit("Q: ", 1)[1][: -len("\nA:")]] + "Q: next"
            elif text.endswith("\n\nSolution:"):
                answer = self.math[text.rsplit("Problem:\n", 1)[1][: -len("\n\nSolution:")]]
            else:
                outs.append(self.niah([p], max_new_tokens=max_new_tokens)[0])
                continue
            outs.append(self.tok.encode(answer)[:max_new_tokens])
        return outs


def small_cfg(**kw):
    cfg = harness.EvalConfig(tasks=["gsm8k", "math500", "niah"], limit=6, batch_size=2, progress=False, **kw)
    cfg.niah.context_lengths, cfg.niah.depths, cfg.niah.variants = [600, 1200], [0.0, 100.0], ["single", "multikey"]
    return cfg


def test_perfect_model_scores_100_and_everything_is_written(tok, tmp_path):
    res = harness.evaluate(GoldModel(tok), tok, small_cfg(), tmp_path, max_seq_len=4096)
    t = res["tasks"]
    assert t["gsm8k"]["summary"]["strict_match"]["accuracy"] == 1.0
    assert t["math500"]["summary"]["accuracy"]["accuracy"] == 1.0
    assert t["niah"]["summary"]["accuracy"]["accuracy"] == 1.0
    assert len(t["gsm8k"]["predictions"]) == 6 and t["gsm8k"]["predictions"][0]["output"].endswith("\n\n")
    assert len(t["niah"]["predictions"]) == 6  # limit applies to the grid too (2 variants x 2 lengths x 2 depths)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["tasks"]["math500"]["predictions"][0]["extracted"]
    csv = (tmp_path / "summary.csv").read_text()
    assert "gsm8k,strict_match,1.0" in csv and "math500,accuracy/Level 3" in csv
    assert (tmp_path / "niah" / "heatmap.png").is_file()


def test_a_killed_eval_resumes_where_it_stopped(tok, tmp_path):
    cfg = small_cfg()
    cfg.tasks = ["gsm8k"]
    with pytest.raises(KeyboardInterrupt):
        harness.evaluate(GoldModel(tok, crash_after=2), tok, cfg, tmp_path, max_seq_len=4096)
    log = tmp_path / "gsm8k" / "generations.jsonl"
    assert len(log.read_text().splitlines()) == 4  # two batches of two were saved
    with open(log, "a") as f:
        f.write('{"id": "gsm8k/test/4", "key": "torn li')  # a write cut by the kill
    model = GoldModel(tok)
    res = harness.evaluate(model, tok, cfg, tmp_path, max_seq_len=4096)
    assert model.prompts == 2  # only the unfinished batch was generated
    assert res["tasks"]["gsm8k"]["summary"]["strict_match"]["accuracy"] == 1.0
    assert len(log.read_text().splitlines()) == 6
    # Finished tasks are reused as they are; a changed setting regenerates only what it changes.
    model = GoldModel(tok)
    harness.evaluate(model, tok, cfg, tmp_path, max_seq_len=4096)
    assert model.prompts == 0
    cfg.limit = 8
    harness.evaluate(model, tok, cfg, tmp_path, max_seq_len=4096)
    assert model.prompts == 2


def test_cli_on_a_real_checkpoint_with_kv_cache_generation_and_ppl(tok, tmp_path, monkeypatch):
    args = preset("tiny", n_layers=2, dim=64, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, max_seq_len=1536)
    model = build(args, seed=0)
    save_model(model, tok, tmp_path / "ckpt")
    rng = np.random.default_rng(0)
    entries = []
    for cat in ("general", "code"):
        w = ShardWriter(tmp_path / "shards", cat, "valid", 0)
        for _ in range(4):
            w.add(rng.integers(0, 128000, size=int(rng.integers(20, 80))))
        entries.append(w.close())
    write_manifest(tmp_path / "shards", entries, tok.describe())
    argv = [
        f"checkpoint={tmp_path / 'ckpt'}",
        "tasks=[gsm8k,niah,ppl]",
        "limit=2",
        "max_new_tokens=6",
        "progress=false",
        f"out={tmp_path / 'out'}",
        "ppl.shards=shards",  # relative: taken from where ./bazelw was run, as every command-line path
        "ppl.seq_len=64",
        "niah.context_lengths=[512]",
        "niah.depths=[50]",
        "niah.variants=[single]",
    ]
    monkeypatch.setenv("HERD_CALLER_DIR", str(tmp_path))
    res = run.main(argv)
    t = res["tasks"]
    assert [len(p["output"]) > 0 for p in t["gsm8k"]["predictions"]] == [True, True]
    assert t["gsm8k"]["throughput"]["generated_items"] == 2
    assert t["niah"]["summary"]["accuracy"]["n"] == 1
    assert set(t["ppl"]["summary"]) == {"general", "code", "all"}
    # A random model is near-uniform over the 128,256-token vocabulary.
    assert abs(t["ppl"]["summary"]["all"]["loss"] - np.log(tok.vocab_size)) < 1.0
    with pytest.raises(ValueError, match="unknown task"):
        run.main([f"checkpoint={tmp_path / 'ckpt'}", "tasks=[gsm9k]"])


def test_contamination_report_and_clean_subset_score(tok, tmp_path):
    items = gsm8k.load()[:6]
    leaked = {items[1].id, items[4].id}
    w = ShardWriter(tmp_path / "train", "general", "train", 0)
    w.add(tok.encode("An unrelated document about gardening and the weather in spring."))
    for it in items:
        if it.id in leaked:
            w.add(tok.encode(f"Homework help. {it.question}\n{it.solution}"))
    write_manifest(tmp_path / "train", [w.close()], tok.describe())
    cfg = small_cfg()
    cfg.tasks = ["gsm8k"]
    cfg.contamination.shards = str(tmp_path / "train")
    res = harness.evaluate(GoldModel(tok), tok, cfg, tmp_path / "out", max_seq_len=4096)
    rep = res["contamination"]["gsm8k"]
    assert rep["contaminated_ids"] == sorted(leaked) and rep["fraction"] == pytest.approx(2 / 6)
    assert rep["score"]["clean"]["n"] == 4 and rep["score"]["clean"]["accuracy"] == 1.0
    assert "gsm8k,contaminated_fraction,0.333" in (tmp_path / "out" / "summary.csv").read_text()
    assert json.loads((tmp_path / "out" / "contamination.json").read_text())["gsm8k"]["scores"][items[0].id] < 0.1
