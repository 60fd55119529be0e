import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tools import atomic


def test_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "b.json"
    atomic.write_json(path, {"x": 1})
    atomic.write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.json"]


def test_directory_is_published_only_on_success(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic.directory(target) as tmp:
        (tmp / "half.txt").write_text("partial")
        raise RuntimeError("killed halfway")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic.directory(target) as tmp:
        (tmp / "done.txt").write_text("whole")
    assert (target / "done.txt").read_text() == "whole"
    with atomic.directory(target) as tmp:
        (tmp / "v2.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["v2.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sigkill_during_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "big.bin"
    atomic.write_bytes(path, b"old")
    script = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {str(os.getcwd())!r})
        from tools import atomic

        data = b"x" * (64 << 20)
        print("writing", flush=True)
        while True:
            atomic.write_bytes({str(path)!r}, data)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.read_bytes() in (b"old", b"x" * (64 << 20))


def test_replacing_hands_a_writer_a_temp_path_with_its_extension(tmp_path):
    import numpy as np

    out = tmp_path / "arrays.npz"
    with atomic.replacing(out, ".npz") as tmp:
        assert tmp.name.endswith(".tmp.npz") and tmp.parent == tmp_path
        np.savez(tmp, a=np.arange(3))  # np.savez would append .npz to a name without it
    assert np.load(out)["a"].tolist() == [0, 1, 2]
    with pytest.raises(RuntimeError), atomic.replacing(out, ".npz") as tmp:
        np.savez(tmp, a=np.arange(5))
        raise RuntimeError("writer failed")
    assert np.load(out)["a"].tolist() == [0, 1, 2]  # the old file stands
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays.npz"]  # no temporary left behind


@pytest.mark.parametrize("mask", [0o022, 0o007])
def test_files_and_directories_get_the_mode_a_plain_open_would(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic.write_json(tmp_path / "a.json", {"x": 1})
        with atomic.replacing(tmp_path / "b.png", ".png") as tmp:
            tmp.write_bytes(b"png")
        with atomic.directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
        (tmp_path / "plain").write_text("x")
        (tmp_path / "plain_dir").mkdir()
    finally:
        os.umask(old)
    mode = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert mode == {"a.json": 0o666 & ~mask, "b.png": 0o666 & ~mask, "d": 0o777 & ~mask,
                    "plain": 0o666 & ~mask, "plain_dir": 0o777 & ~mask}  # fmt: skip
    # Replacing a file keeps its mode, as writing it in place would.
    (tmp_path / "a.json").chmod(0o640)
    atomic.write_json(tmp_path / "a.json", {"x": 2})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
