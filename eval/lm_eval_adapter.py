"""lm-evaluation-harness adapter: evaluate a model.checkpoint directory with any lm-eval task.

    import eval.lm_eval_adapter  # registers the model type "herd"
    lm_eval.simple_evaluate(model="herd", model_args="checkpoint=DIR,device=cuda,dtype=bfloat16", tasks=[...])

or, from Python with a model already in memory, `HerdLM(model=..., tokenizer=...)`.

- loglikelihood: context and continuation are encoded together (the continuation's tokens are those of the joint
  encoding past the context's, falling back to encoding it alone where BPE merges across the seam); the model runs
  on <|begin_of_text|> + context + continuation, left-truncated to max_seq_len; right padding within a batch.
- loglikelihood_rolling: the whole text in windows of max_seq_len, every token predicted once with the most
  context available (lm-eval's rolling-window rule).
- generate_until: greedy batched KV-cache decoding (eval.generation), cut at the `until` strings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from eval import generation
from model.dtypes import parse_dtype


@register_model("herd")
class HerdLM(LM):
    def __init__(
        self,
        checkpoint: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int | str = 8,
        max_gen_toks: int = 256,
        model=None,
        tokenizer=None,
        **_ignored,  # lm-eval passes max_batch_size and friends
    ):
        super().__init__()
        if model is None:
            from model.checkpoint import load_model

            if not checkpoint:
                raise ValueError("HerdLM needs checkpoint=<model directory> (or model= and tokenizer=)")
            model, tokenizer = load_model(checkpoint, device or "cpu", dtype=parse_dtype(dtype))
        self.model, self.tok = model.eval(), tokenizer
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8  # "auto" -> 8
        self.max_gen_toks = int(max_gen_toks)
        self.max_len = model.args.max_seq_len
        self._device = model.tok_embeddings.weight.device

    # ---- scoring ----
    def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        ctx = [self.tok.bos_id, *self.tok.encode(context)]
        whole = [self.tok.bos_id, *self.tok.encode(context + continuation)]
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            return ctx, whole[len(ctx) :]
        return ctx, self.tok.encode(continuation)

    @torch.inference_mode()
    def _score(self, seqs: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """For (tokens, n_scored): log-prob of the last n_scored tokens and whether each is the argmax."""
        out = []
        for i in range(0, len(seqs), self.batch_size):
            chunk = seqs[i : i + self.batch_size]
            T = max(len(t) for t, _ in chunk) - 1
            inp = torch.zeros(len(chunk), T, dtype=torch.long)
            for b, (t, _) in enumerate(chunk):
                inp[b, : len(t) - 1] = torch.tensor(t[:-1])
            logits = self.model(inp.to(self._device)).float()
            logp = F.log_softmax(logits, dim=-1)
            for b, (t, n) in enumerate(chunk):
                pos = torch.arange(len(t) - 1 - n, len(t) - 1, device=self._device)  # predicting t[-n:]
                target = torch.tensor(t[-n:], device=self._device)
                lp = logp[b, pos]
                out.append((float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())))
        return out

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        seqs = []
        for req in requests:
            ctx, cont = self._split(*req.args)
            if not cont:
                raise ValueError(f"loglikelihood request with an empty continuation: {req.args!r:.80}")
            seq = (ctx + cont)[-(self.max_len + 1) :]  # keep the continuation, drop the oldest context
            seqs.append((seq, min(len(cont), len(seq) - 1)))
        return self._score(seqs)

    def loglikelihood_rolling(self, requests) -> list[float]:
        out = []
        for req in requests:
            tokens = [self.tok.bos_id, *self.tok.encode(req.args[0])]
            total, start = 0.0, 1  # tokens[start:end] are scored in each window
            while start < len(tokens):
                end = min(start + self.max_len, len(tokens))
                window = tokens[max(0, end - self.max_len - 1) : end]  # full context for the last window
                total += self._score([(window, end - start)])[0][0]
                start = end
            out.append(total)
        return out

    def generate_until(self, requests) -> list[str]:
        prompts, budgets, stops = [], [], []
        for req in requests:
            context, kwargs = req.args
            until = kwargs.get("until", [])
            stops.append(tuple([until] if isinstance(until, str) else until))
            budgets.append(int(kwargs.get("max_gen_toks", self.max_gen_toks)))
            ids = [self.tok.bos_id, *self.tok.encode(context)]
            prompts.append(ids[-(self.max_len - budgets[-1]) :])
        stream = generation.model_stream(self.model)
        out: list[str] = [""] * len(requests)
        # Requests sharing stop strings and budget are batched together.
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(stops, budgets)):
            groups.setdefault(key, []).append(i)
        for (until, budget), idx in groups.items():
            texts = generation.generate_texts(
                stream,
                self.tok,
                [prompts[i] for i in idx],
                max_new_tokens=budget,
                stop_strings=until,
                batch_size=self.batch_size,
                progress=False,
            )
            for i, t in zip(idx, texts):
                out[i] = t
        return out
