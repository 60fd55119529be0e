"""Shard tasks as a submitit Slurm job array on the single-node Slurm (tools/slurm/start.sh), with the same
result as in-process execution."""

import pytest

from data.tests.helpers import corpus, final_documents, run_pipeline, tree_bytes
from tools import testing


@pytest.fixture(scope="module", autouse=True)
def slurm():
    testing.single_node_slurm()


def test_job_array_matches_inline_run(tmp_path):
    src = corpus(tmp_path / "corpus", scale=0.08, shards=3, format="jsonl")
    args = [f"input={src / 'jsonl'}", "steps=[read,url_dedup,minhash,gopher_repetition]"]
    inline = run_pipeline(tmp_path / "inline", [*args, "executor=inline"])
    slurm = run_pipeline(tmp_path / "slurm", [*args, "executor=slurm", "slurm.timeout_min=5", "slurm.mem_gb=1"])
    assert slurm == inline and slurm["documents_dropped"] > 0
    logs = list((tmp_path / "slurm" / "logs" / "slurm").rglob("*_log.out"))
    assert len(logs) == 3 * 3  # three segments (cut before url_dedup and minhash), three shard tasks each
    assert final_documents(tmp_path / "slurm").keys() == final_documents(tmp_path / "inline").keys()
    a, b = tree_bytes(tmp_path / "inline"), tree_bytes(tmp_path / "slurm")
    assert [k for k in a if k not in ("config.yaml",) and a[k] != b[k]] == []
