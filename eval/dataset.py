"""Where a task's items come from: the project's vendored copy by default, any local JSONL/JSON/Parquet file or
folder, or a Hugging Face hub dataset at a pinned revision, all read through `datasets` as the ecosystem does.

    gsm8k.path=my/gsm8k_dev.jsonl                                    # a local file (or folder) of records
    gsm8k.hub=openai/gsm8k gsm8k.name=main gsm8k.revision=<sha>     # the hub (needs network)
    math.hub=HuggingFaceH4/MATH-500 math.split=test

A missing file, an unreadable record or a missing field is one error naming the file (or hub dataset), the record
and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tools import assets

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


class DatasetError(ValueError):
    pass


@dataclass
class DatasetConfig:
    path: str = ""  # a local JSONL/JSON/Parquet file or folder ("assets:<path>" too); "" = the vendored copy
    hub: str = ""  # instead: a Hugging Face hub dataset name, e.g. openai/gsm8k (needs network)
    name: str = ""  # the hub dataset's config name (GSM8K: main)
    revision: str = ""  # the hub dataset's revision; a commit sha pins it
    split: str = ""  # the split to read ("" = the task's own: test); picks the vendored file or the hub split


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES))
        if not files:
            raise DatasetError(f"{path}: no {', '.join(SUFFIXES)} file in this folder")
        return files
    if not path.is_file():
        raise DatasetError(f"{path}: no such file or folder")
    if not path.name.lower().endswith(SUFFIXES):
        raise DatasetError(f"{path}: not a dataset file (expected one of {', '.join(SUFFIXES)})")
    return [path]


def load_rows(cfg: DatasetConfig, vendored: dict[str, str], fields: tuple[str, ...]) -> tuple[list[dict], str, str]:
    """The records of `cfg` as dicts, each checked to hold every one of `fields`, with the source's name (a
    path or hub id, for messages and ids) and the split read. `vendored` maps split -> vendored asset path."""
    import datasets

    datasets.disable_progress_bars()
    split = cfg.split or "test"
    if cfg.hub and cfg.path:
        raise DatasetError(f"set either path ({cfg.path}) or hub ({cfg.hub}), not both")
    if cfg.hub:
        where = f"{cfg.hub}@{cfg.revision or 'latest'}[{split}]"
        try:
            ds = datasets.load_dataset(cfg.hub, cfg.name or None, revision=cfg.revision or None, split=split)
        except Exception as e:  # offline, unknown name, unknown split: datasets raises many kinds
            raise DatasetError(f"hub dataset {where} could not be loaded ({type(e).__name__}: {e}); "
                               "without network, point path= at a local copy") from None  # fmt: skip
    else:
        if cfg.path:
            path = assets.resolve(cfg.path)
        elif split in vendored:
            path = assets.path(vendored[split])
        else:
            raise DatasetError(f"no vendored '{split}' split (known: {', '.join(vendored)}); set path= or hub=")
        files = _local_files(path)
        where = str(path)
        builder = "parquet" if all(f.suffix == ".parquet" for f in files) else "json"
        try:
            ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
        except Exception as e:
            cause = e.__cause__ or e
            raise DatasetError(f"{where}: not readable as {builder} records ({cause})") from None
    rows = ds.to_list()
    for i, row in enumerate(rows):
        for f in fields:
            if row.get(f) is None:
                raise DatasetError(f"{where}: record {i + 1} has no field '{f}' (it has: {', '.join(sorted(row))})")
    return rows, where, split
