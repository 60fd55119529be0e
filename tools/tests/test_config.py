from dataclasses import dataclass, field

import pytest
import yaml

from tools import config
from tools.config import ConfigError


@dataclass
class OptimConfig:
    peak_lr: float = 3e-4
    warmup_steps: int = 2000
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])


@dataclass
class RunConfig:
    name: str = "tiny"
    seed: int = 0
    tasks: list[str] = field(default_factory=lambda: ["gsm8k"])
    optim: OptimConfig = field(default_factory=OptimConfig)


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_then_files_in_order_then_overrides(tmp_path):
    a = write(tmp_path / "a.yaml", {"seed": 1, "optim": {"peak_lr": 1e-3}})
    b = write(tmp_path / "b.yaml", {"seed": 2})
    cfg = config.parse(RunConfig, [f"config=[{a},{b}]", "optim.warmup_steps=10", "tasks=[gsm8k,math500]"])
    assert isinstance(cfg, RunConfig) and isinstance(cfg.optim, OptimConfig)
    assert (cfg.seed, cfg.optim.peak_lr, cfg.optim.warmup_steps) == (2, 1e-3, 10)
    assert cfg.optim.betas == [0.9, 0.95]
    assert cfg.tasks == ["gsm8k", "math500"]


def test_unknown_key_in_a_file_names_file_and_suggests(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"optim": {"peak_lrr": 1e-3}})
    with pytest.raises(ConfigError) as e:
        config.parse(RunConfig, [f"config={bad}"])
    msg = str(e.value)
    assert "optim.peak_lrr" in msg and str(bad) in msg and "did you mean 'optim.peak_lr'" in msg


def test_unknown_key_on_command_line_suggests_by_leaf():
    with pytest.raises(ConfigError) as e:
        config.parse(RunConfig, ["warmup_step=5"])
    assert "'warmup_step'" in str(e.value) and "command line" in str(e.value)
    assert "did you mean 'optim.warmup_steps'" in str(e.value)


def test_wrong_type_names_key_and_source(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.parse(RunConfig, ["optim.warmup_steps=many"])
    assert "optim.warmup_steps" in str(e.value) and "command line" in str(e.value)
    bad = write(tmp_path / "t.yaml", {"optim": "fast"})
    with pytest.raises(ConfigError, match=r"'optim'.*t\.yaml"):
        config.parse(RunConfig, [f"config={bad}"])


def test_malformed_arguments_and_files(tmp_path):
    with pytest.raises(ConfigError, match="not of the form key=value"):
        config.parse(RunConfig, ["seed"])
    with pytest.raises(ConfigError, match="does not exist"):
        config.parse(RunConfig, [f"config={tmp_path / 'nope.yaml'}"])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        config.parse(RunConfig, [f"config={tmp_path / 'list.yaml'}"])
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.parse(RunConfig, [f"config={tmp_path / 'broken.yaml'}"])


def test_required_keys_must_be_set():
    @dataclass
    class Needs:
        checkpoint: str = "???"

    with pytest.raises(ConfigError, match="checkpoint"):
        config.parse(Needs, [])
    assert config.parse(Needs, ["checkpoint=/x"]).checkpoint == "/x"


def test_relative_config_paths_follow_the_callers_directory(tmp_path, monkeypatch):
    write(tmp_path / "rel.yaml", {"seed": 7})
    monkeypatch.delenv("HERD_CALLER_DIR", raising=False)
    monkeypatch.setenv("BUILD_WORKING_DIRECTORY", str(tmp_path))
    assert config.parse(RunConfig, ["config=rel.yaml"]).seed == 7
    # ./bazelw exports where the user was before it changes into the repo root: that wins.
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "rel.yaml", {"seed": 8})
    monkeypatch.setenv("HERD_CALLER_DIR", str(tmp_path / "sub"))
    assert config.parse(RunConfig, ["config=rel.yaml"]).seed == 8


def test_save_round_trip_and_hash(tmp_path):
    cfg = config.parse(RunConfig, ["seed=3", "tasks=[a,b]"])
    path = config.save(cfg, tmp_path / "out" / "config.yaml")
    again = config.parse(RunConfig, [f"config={path}"])
    assert again == cfg
    assert config.config_hash(again) == config.config_hash(cfg)
    assert config.config_hash(config.parse(RunConfig, ["seed=4"])) != config.config_hash(cfg)


def test_help_lists_keys(capsys):
    with pytest.raises(SystemExit) as e:
        config.parse(RunConfig, ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "peak_lr: 0.0003" in out and "warmup_steps: 2000" in out
