import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from eval.lm_eval_adapter import HerdLM
from model.llama import build
from model.presets import preset
from model.tokenizer import Tokenizer
from tools import assets


@pytest.fixture(scope="module")
def lm():
    tok = Tokenizer.llama3()
    args = preset("tiny", n_layers=2, dim=64, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, max_seq_len=32)
    return HerdLM(model=build(args, seed=0), tokenizer=tok, batch_size=3)


def req(kind, *args):
    return Instance(kind, {}, tuple(args), 0)


def manual_logprob(lm, tokens, n):
    with torch.no_grad():
        logp = F.log_softmax(lm.model(torch.tensor([tokens[:-1]])).float(), -1)[0]
    return sum(float(logp[len(tokens) - 1 - n + i, tokens[len(tokens) - n + i]]) for i in range(n))


def test_registered_under_herd():
    assert get_model("herd") is HerdLM


def test_loglikelihood_matches_a_direct_forward(lm):
    pairs = [("The cat sat on the", " mat"), ("2 + 2 =", " 4"), ("", "Hello world"), ("Question: why?", " Because.")]
    got = lm.loglikelihood([req("loglikelihood", c, x) for c, x in pairs])
    for (c, x), (lp, greedy) in zip(pairs, got):
        ctx, cont = lm._split(c, x)
        assert lp == pytest.approx(manual_logprob(lm, ctx + cont, len(cont)), abs=1e-4)
        assert lp < 0 and isinstance(greedy, bool)
    # A continuation that is the model's own greedy choice is reported as greedy.
    ctx = [lm.tok.bos_id, *lm.tok.encode("The cat")]
    with torch.no_grad():
        nxt = int(lm.model(torch.tensor([ctx]))[0, -1].argmax())
    ((_, greedy),) = lm.loglikelihood([req("loglikelihood", "The cat", lm.tok.decode([nxt]))])
    assert greedy


def test_rolling_scores_every_token_once_with_max_context(lm):
    text = "one two three four five six seven eight nine ten " * 8  # > 64 tokens: three windows
    tokens = [lm.tok.bos_id, *lm.tok.encode(text)]
    assert len(tokens) > 2 * lm.max_len
    (got,) = lm.loglikelihood_rolling([req("loglikelihood_rolling", text)])
    want, start = 0.0, 1
    while start < len(tokens):
        end = min(start + 32, len(tokens))
        window = tokens[max(0, end - 33) : end]
        want += manual_logprob(lm, window, end - start)
        start = end
    assert got == pytest.approx(want, rel=1e-5)


def test_generate_until_cuts_at_stop_strings(lm):
    reqs = [req("generate_until", "Q: hi\nA:", {"until": ["\n"], "max_gen_toks": 6}) for _ in range(2)]
    reqs.append(req("generate_until", "Count:", {"until": "zzzz", "max_gen_toks": 4}))
    out = lm.generate_until(reqs)
    assert len(out) == 3 and out[0] == out[1] and "\n" not in out[0]
    assert len(lm.tok.encode(out[2])) <= 4


def test_simple_evaluate_runs_a_local_task_end_to_end(lm, tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "gsm8k_local.yaml").write_text(
        "task: gsm8k_local\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {assets.path('gsm8k/test.jsonl.gz')}\n"
        f"  cache_dir: {tmp_path / 'hf'}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "Q: {{question}}\\nA:"\n'
        "doc_to_target: \"{{answer.split('####')[-1].strip()}}\"\n"
        "generation_kwargs:\n  until: ['Q:']\n  max_gen_toks: 4\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False)
    res = lm_eval.simple_evaluate(model=lm, tasks=["gsm8k_local"], task_manager=tm, limit=3)
    r = res["results"]["gsm8k_local"]
    assert r["sample_len"] == 3 and r["exact_match,none"] == 0.0  # a random model answers nothing right
