"""Safety and PII: domain block lists, and e-mail addresses, phone numbers and IP addresses.

`domains` drops documents whose URL host (or any parent domain of it) is in a user-supplied block list
(one domain per line, `#` comments). `pii` finds the three kinds; per config it masks them
(`mode: mask`) and/or drops documents whose density exceeds `max_density` matches per 1000 characters.
Counts per kind go to the step's counters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from data.base import Filter, Step, Task
from data.document import Document


@dataclass
class DomainsConfig:
    blocklists: list[str] = field(default_factory=list)  # files of blocked domains


def host_of(url: str) -> str:
    try:
        return (urlsplit(url.strip()).hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


class Domains(Filter):
    name = "domains"

    def prepare_run(self) -> None:
        self.setup()

    def setup(self) -> None:
        self.blocked: set[str] = set()
        for p in self.cfg.blocklists:
            path = self.env.path(p)
            if not path.is_file():
                raise FileNotFoundError(f"domains.blocklists: {path} does not exist")
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.split("#", 1)[0].strip().lower()
                if line:
                    self.blocked.add(line.removeprefix("www.").rstrip("."))

    def keep(self, doc: Document):
        host = host_of(doc.url)
        parts = host.split(".")
        for i in range(len(parts) - 1):
            if ".".join(parts[i:]) in self.blocked:
                return "blocked domain", ".".join(parts[i:])
        return None


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
PATTERNS = {  # applied in this order (an IP address must not be read as a phone number)
    "email": re.compile(
        r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
        r"\.[A-Za-z]{2,24}(?![\w-])"
    ),
    "ip": re.compile(rf"(?<![\w.]){_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?!\.?\d)(?![\w])"),
    "phone": re.compile(
        r"(?<![\w+.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w-])(?!\.\d)"
    ),
}


@dataclass
class PiiConfig:
    kinds: list[str] = field(default_factory=lambda: ["email", "phone", "ip"])
    mode: str = "mask"  # mask: replace matches with a tag | keep: only count (and drop by density)
    max_density: float = 10.0  # drop documents with more matches per 1000 characters (0: never drop)
    tags: dict[str, str] = field(default_factory=lambda: {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP_ADDRESS>"})


class Pii(Step):
    name = "pii"

    def prepare_run(self) -> None:
        self.setup()

    def setup(self) -> None:
        unknown = sorted(set(self.cfg.kinds) - set(PATTERNS))
        if unknown:
            raise ValueError(f"pii.kinds: unknown {unknown}; known {sorted(PATTERNS)}")
        if self.cfg.mode not in ("mask", "keep"):
            raise ValueError(f"pii.mode must be mask or keep, got '{self.cfg.mode}'")
        self.kinds = sorted(self.cfg.kinds, key=list(PATTERNS).index)  # IPs before phones

    def process(self, docs: Iterator[Document], task: Task) -> Iterator[Document]:
        st = task.step_stats(self.name)
        for doc in docs:
            found = 0
            text = doc.text
            for kind in self.kinds:
                if kind == "email" and "@" not in text:
                    continue
                text, n = PATTERNS[kind].subn(self.cfg.tags.get(kind, f"<{kind.upper()}>"), text)
                if n:
                    st.counters[kind] += n
                    found += n
            if found and self.cfg.max_density > 0 and found * 1000 / max(len(doc.text), 1) > self.cfg.max_density:
                task.drop(doc, self.name, "PII density over max_density", f"{found} matches")
                continue
            if found:
                st.counters["documents with PII"] += 1
                if self.cfg.mode == "mask":
                    doc.text = text
            yield doc
