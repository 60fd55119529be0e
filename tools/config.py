"""Configuration: one dataclass schema per component, merged from YAML files and key=value overrides.

Every binary parses its command line the same way:

    cfg = config.parse(DescribeConfig, sys.argv[1:])

where each argument is either `config=PATH` (a YAML file; repeat it, or give `config=[a.yaml,b.yaml]`,
to merge several in order) or a dotted `key=value` override (`model.dim=512`, `tasks=[gsm8k,ppl]`).
Overrides apply after the files. `--help` prints every key with its default.

An unknown key or a value of the wrong type is a `ConfigError` that names the key, where it came from
(the YAML file or the command line) and, for unknown keys, the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from tools import atomic
from tools.paths import user_path

T = TypeVar("T")
COMMAND_LINE = "the command line"


class ConfigError(ValueError):
    """A configuration problem, phrased for the user who wrote the config."""


def valid_keys(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key path of a structured config (nested dataclasses included)."""
    keys = []
    if isinstance(node, DictConfig):
        for key in node:
            path = f"{prefix}{key}"
            keys.append(path)
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
                keys.extend(valid_keys(child, path + "."))
    return keys


def _suggest(bad_key: str, keys: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest valid key, comparing whole paths and then last parts."""
    match = difflib.get_close_matches(bad_key, keys, n=1, cutoff=0.6)
    if not match:
        leaf = bad_key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    return f" (did you mean '{match[0]}'?)" if match else ""


def _merge(base: DictConfig, update: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except ConfigKeyError as e:
        key = e.full_key or str(e.key)
        raise ConfigError(f"unknown key '{key}' in {source}{_suggest(key, valid_keys(base))}") from None
    except OmegaConfBaseException as e:
        key = e.full_key or _mapping_mismatch(base, update) or str(e.key)
        reason = str(e.msg if hasattr(e, "msg") and e.msg else e).splitlines()[0]
        raise ConfigError(f"bad value for key '{key}' in {source}: {reason}") from None


def _mapping_mismatch(base: DictConfig, update: Any, prefix: str = "") -> str | None:
    """The dotted key where `update` gives a plain value for a nested config (OmegaConf does not say)."""
    if not isinstance(update, DictConfig):
        return None
    for key in update:
        if key not in base:
            continue
        child, value = base._get_node(key), update._get_node(key)
        if isinstance(child, DictConfig):
            if not isinstance(value, DictConfig):
                return f"{prefix}{key}"
            found = _mapping_mismatch(child, value, f"{prefix}{key}.")
            if found:
                return found
    return None


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, found {type(data).__name__}")
    return OmegaConf.create(data)


def split_args(argv: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Separate `config=...` file arguments from dotted `key=value` overrides."""
    files, overrides = [], []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"argument '{arg}' is not of the form key=value (or config=FILE.yaml)")
        key, value = arg.split("=", 1)
        if key == "config":
            value = value.strip()
            items = value[1:-1].split(",") if value.startswith("[") and value.endswith("]") else [value]
            files.extend(user_path(v.strip()) for v in items if v.strip())
        else:
            overrides.append(arg)
    return files, overrides


def load(schema: type[T], files: Sequence[Path] = (), overrides: Sequence[str] = ()) -> T:
    """Defaults of `schema`, then each YAML file in order, then the overrides; returns a `schema` object."""
    cfg = OmegaConf.structured(schema)
    for path in files:
        cfg = _merge(cfg, _load_yaml(Path(path)), f"config file {path}")
    for item in overrides:
        try:
            update = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot parse override '{item}' on {COMMAND_LINE}: {e}") from None
        cfg = _merge(cfg, update, COMMAND_LINE)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError("required keys have no value: " + ", ".join(missing) + " (set them as key=value)")
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot resolve config: {e}") from None


def parse(schema: type[T], argv: Sequence[str] | None = None) -> T:
    """Parse a binary's command line (see the module docstring); `--help` prints the keys and exits."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(f"{schema.__name__}: pass config=FILE.yaml and/or key=value overrides. Keys and defaults:")
        print(OmegaConf.to_yaml(OmegaConf.structured(schema)))
        raise SystemExit(0)
    files, overrides = split_args(argv)
    return load(schema, files, overrides)


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=False)


def to_dict(cfg: Any) -> dict:
    node = OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


def config_hash(cfg: Any) -> str:
    """A stable hash of the resolved values (key order and formatting do not matter)."""
    canonical = yaml.safe_dump(to_dict(cfg), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def save(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    return atomic.write_text(path, to_yaml(cfg))
