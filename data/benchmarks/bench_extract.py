"""HTML -> text: every engine setting side by side, quality on the scored set and speed on every vendored page.

Quality: each setting extracts the 26 pages of the scored set (third_party/data/web/extraction/expected.jsonl:
page + the main text a reader finds in it; en, zh, ru, nl, sv) and is scored with word 4-gram shingles
(data.extract.score): mean precision, mean recall, F1 of the two. Speed: documents per second (CPU time, engine
only, no sandbox, one process) over every HTML response of the vendored WARCs and the DCLM pages, the settings
alternated in each repeat (rotated order), median and min-max over the repeats; each setting must give the same
output in every repeat. Then the rule (data.extract.choose_default) picks the default, checked against
ExtractConfig's.

    .venv/bin/python data/benchmarks/bench_extract.py [--repeat 5] [--pages]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from dataclasses import asdict

from data.extract import SETTINGS, ExtractConfig, choose_default, decode, score, scored_pages, summarize
from data.html2text import extract_html
from data.warc import iter_records, parse_http
from tools import assets


def pages() -> dict[tuple[str, str], str]:
    """(file, url) -> decoded HTML of every HTML page in the vendored web samples."""
    web = assets.path("web")
    out = {}
    for path in sorted(web.glob("*.warc.gz")):
        for rec in iter_records(str(path)):
            if rec.type != "response" or rec.error:
                continue
            http = parse_http(rec.block, 1 << 26)
            if http.status == 200 and "html" in http.headers.get("content-type", ""):
                url = rec.headers.get("warc-target-uri", "").strip("<>")
                out[(f"web/{path.name}", url)] = decode(http.body, http.headers.get("content-type", ""))[0]
    for path in sorted((web / "html").glob("*.html")):
        out[(f"web/html/{path.name}", "")] = decode(path.read_bytes(), "")[0]
    return out


def options(setting: dict) -> dict:
    """The extract_html arguments of a setting, as the extract step passes them."""
    cfg = ExtractConfig(**setting)
    return {"engine": cfg.engine, "main_content": cfg.main_content, "markdown": True, "favor": cfg.favor,
            "trim": cfg.trim}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pages", action="store_true", help="print each page's precision / recall per setting")
    args = ap.parse_args()
    scored = scored_pages()
    docs = list(pages().values())
    langs = Counter(r["lang"] for r, _ in scored)
    print(f"scored set: {len(scored)} pages ({', '.join(f'{k} {v}' for k, v in langs.most_common())})")
    print(f"speed: {len(docs)} HTML pages, {sum(map(len, docs)) / 1e6:.2f} MB, {args.repeat} alternated repeats")
    results: dict[str, dict] = {}
    per_page = {}
    for name, setting in SETTINGS.items():
        opts = options(setting)
        scores = [score(rec["text"], extract_html(html, **opts)) for rec, html in scored]
        p, r, f1 = summarize(scores)
        per_page[name] = scores
        results[name] = {"p": p, "r": r, "f1": f1, "empty": sum(s[0] is None for s in scores), "rates": []}
        results[name]["chars"] = sum(len(extract_html(h, **opts)) for h in docs)  # also the warm-up pass
    names = list(SETTINGS)
    for rep in range(args.repeat):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            opts = options(SETTINGS[name])
            start = time.process_time()
            chars = sum(len(extract_html(h, **opts)) for h in docs)
            results[name]["rates"].append(len(docs) / (time.process_time() - start))
            if chars != results[name]["chars"]:
                raise RuntimeError(f"{name}: {chars} characters out in repeat {rep}, {results[name]['chars']} before")
    print("\n| setting | precision | recall | F1 | empty | docs/s (median) | min-max | chars out |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, res in results.items():
        res["dps"] = statistics.median(res["rates"])
        print(
            f"| {name} | {res['p']:.3f} | {res['r']:.3f} | {res['f1']:.3f} | {res['empty']} | {res['dps']:.0f} | "
            f"{min(res['rates']):.0f}-{max(res['rates']):.0f} | {res['chars']:,} |"
        )
    if args.pages:
        for i, (rec, _) in enumerate(scored):
            cells = " ".join(f"{per_page[n][i][0] or 0:.2f}/{per_page[n][i][1]:.2f}" for n in names)
            print(f"{rec['lang']} {(rec['url'] or rec['file'])[-50:]:50s} {cells}")
    chosen, why = choose_default(results)
    default = {k: v for k, v in asdict(ExtractConfig()).items() if k in SETTINGS[chosen]}
    print(f"\nrule: default = '{chosen}': {why}")
    print(f"ExtractConfig() default {'matches' if default == SETTINGS[chosen] else 'DOES NOT MATCH'}: {default}")


if __name__ == "__main__":
    main()
