"""HTML -> text: resiliparse vs trafilatura on the real pages of third_party/data/web, side by side.

Quality: for 17 real pages, main-content passages picked by hand (extraction_fixtures.json) must appear in the
output (recall) and navigation/footer strings must not (boilerplate removed). Speed: documents per second over
every HTML response of the vendored WARCs and the DCLM pages, engine only (no sandbox), one process.

    .venv/bin/python data/benchmarks/bench_extract.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from data.extract import decode
from data.html2text import extract_html
from data.warc import iter_records, parse_http
from tools import assets

FIXTURES = Path(__file__).with_name("extraction_fixtures.json")


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


ENGINES = {
    "resiliparse (main content)": dict(engine="resiliparse", main_content=True, markdown=True),
    "resiliparse (all text)": dict(engine="resiliparse", main_content=False, markdown=True),
    "trafilatura": dict(engine="trafilatura", main_content=True, markdown=True),
}


def quality(html: dict, opts: dict) -> tuple[float, float, list[str]]:
    fixtures = json.loads(FIXTURES.read_text(encoding="utf-8"))
    found = total = clean = total_b = 0
    misses = []
    for fx in fixtures:
        text = " ".join(extract_html(html[(fx["file"], fx["url"])], **opts).split())
        for s in fx["expected"]:
            total += 1
            found += s in text
            if s not in text:
                misses.append(f"missed: {fx['url'] or fx['file']}: {s[:60]}")
        for s in fx["boilerplate"]:
            total_b += 1
            clean += s not in text
            if s in text:
                misses.append(f"kept boilerplate: {fx['url'] or fx['file']}: {s[:60]}")
    return found / total, clean / total_b, misses


def speed(html: dict, opts: dict, repeat: int) -> tuple[float, int]:
    docs = list(html.values()) * repeat
    start = time.process_time()
    chars = sum(len(extract_html(h, **opts)) for h in docs)
    return len(docs) / (time.process_time() - start), chars // repeat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    html = pages()
    print(f"{len(html)} real HTML pages, {sum(map(len, html.values())) / 1e6:.1f} MB")
    results = {}
    for name, opts in ENGINES.items():
        recall, clean, misses = quality(html, opts)
        dps, chars = speed(html, opts, args.repeat)
        results[name] = (recall, clean, dps)
        print(
            f"{name:28s} passages found {recall:6.1%}  boilerplate removed {clean:6.1%}  {dps:7.1f} docs/s (CPU)  "
            f"{chars / 1e3:.0f}k chars out"
        )
        for m in misses:
            print("    " + m)
    base = results["trafilatura"][2]
    for name, (_, _, dps) in results.items():
        print(f"speed ratio {name} / trafilatura: {dps / base:.1f}x")


if __name__ == "__main__":
    main()
