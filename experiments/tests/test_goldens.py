import json

import pytest

from experiments import goldens


def test_compare_flags_drift_missing_and_new():
    gold = {"loss": {"value": 3.0, "tol": 0.1}, "kept": {"value": 100, "tol": 0}, "gone": {"value": 1.0, "tol": 0}}
    rows = {r.metric: r for r in goldens.compare({"loss": 3.05, "kept": 101, "extra": 7}, gold)}
    assert rows["loss"].ok and not rows["kept"].ok and not rows["gone"].ok and rows["gone"].got is None
    assert rows["extra"].ok and rows["extra"].golden is None
    text = goldens.table(list(rows.values()))
    assert "| kept | 100 | 101 | 0 | DRIFT |" in text and "| extra | - | 7 | 0 | new |" in text


def test_rewrite_keeps_tolerances_and_sets_new_ones():
    old = {"loss": {"value": 3.0, "tol": 0.25}}
    new = goldens.rewritten({"loss": 2.5, "kept": 90, "ppl": 10.0}, old, default_tol=0.02)
    assert new == {
        "loss": {"value": 2.5, "tol": 0.25},
        "kept": {"value": 90, "tol": 0.0},
        "ppl": {"value": 10.0, "tol": 0.2},
    }


def test_cli_check_and_rewrite(tmp_path, capsys):
    run, gdir = tmp_path / "run", tmp_path / "goldens"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"loss": 2.0, "kept": 5}))
    args = ["experiment=toy", f"run={run}", f"goldens_dir={gdir}"]
    with pytest.raises(SystemExit, match="needs reason"):
        goldens.main([*args, "rewrite=true"])
    assert goldens.main([*args, "rewrite=true", "reason=first goldens"]) == 0
    stored = json.loads((gdir / "toy.json").read_text())
    assert stored["reason"] == "first goldens" and stored["metrics"]["kept"] == {"value": 5, "tol": 0.0}
    assert goldens.main(args) == 0
    (run / "metrics.json").write_text(json.dumps({"loss": 2.01, "kept": 6}))
    assert goldens.main(args) == 1
    out = capsys.readouterr()
    assert "| kept | 5 | 6 | 0 | DRIFT |" in out.out and "1 metric(s) drifted" in out.err
