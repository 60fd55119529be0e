import json

import pytest

from model.describe import describe, main
from model.presets import preset


@pytest.mark.parametrize("name, count", [("8b", 8_030_261_248), ("70b", 70_553_706_496), ("405b", 405_853_388_800)])
def test_counts_and_breakdown(name, count):
    d = describe(preset(name), seq_len=8192)
    assert d["total"] == count
    parts = d["embedding"] + d["layers"] + d["final_norm"] + d["output"]
    assert parts == count and d["embedding"] == d["output"] == 128256 * preset(name).dim


def test_flops_per_token_8b():
    d = describe(preset("8b"), seq_len=4096)
    a = d["per_layer_attention"]
    # 8B by hand: wq/wo 4096x4096, wk/wv 1024x4096 (8 KV heads of 128), three 14336x4096 FFN matrices.
    assert (a["wq"], a["wk"], a["wv"], a["wo"]) == (4096 * 4096, 1024 * 4096, 1024 * 4096, 4096 * 4096)
    assert d["per_layer_ffn"]["w1"] == 14336 * 4096 and d["per_layer"] == 218_112_000
    n = 8_030_261_248 - 128256 * 4096  # the input embedding is a lookup, not a matmul
    assert d["flops_per_token"]["6N"] == 6 * n == 45_029_548_032
    assert d["flops_per_token"]["attention"] == 12 * 32 * 4096 * 4096
    # The paper's 405B budget: 3.8e25 FLOPs for 15.6T tokens is 6N per token to within 1%.
    d405 = describe(preset("405b"), seq_len=8192)
    assert abs(d405["flops_per_token"]["6N"] * 15.6e12 / 3.8e25 - 1) < 0.01


def test_cli(capsys):
    main(["preset=405b"])
    out = capsys.readouterr().out
    assert "parameters: 405,853,388,800" in out and "feed_forward.w1 (x126)" in out
    main(["preset=tiny", "seq_len=2048", "json=true"])
    d = json.loads(capsys.readouterr().out)
    assert d["seq_len"] == 2048 and d["args"]["vocab_size"] == 8192
