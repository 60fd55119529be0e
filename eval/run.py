"""`./bazelw run //eval:run -- checkpoint=DIR tasks=[gsm8k,math500,niah,ppl] limit=N ...` (see eval/README.md);
`format=chat` evaluates a post-trained model (GSM8K and MATH as 0-shot chain of thought in the chat format)."""

from __future__ import annotations

import sys

from eval import harness
from tools import config


def main(argv: list[str] | None = None) -> dict:
    cfg = config.parse(harness.EvalConfig, argv)
    results = harness.run(cfg)
    import polars as pl

    with pl.Config(tbl_rows=200, tbl_width_chars=120, fmt_str_lengths=40):
        print(harness.summary_table(results))
    out = cfg.out or f"{cfg.checkpoint}/eval"
    print(f"results: {out}/results.json")
    return results


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:  # config and input errors: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
