"""The code sandbox against hostile programs: each one is stopped by the limit meant for it, nothing escapes
(files, network, processes), and the caller gets its verdict within the wall-clock limit."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid

import pytest

from data.posttrain import sandbox
from data.posttrain.sandbox import SandboxConfig, run_tests
from tools.testing import unavailable

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = (
    "from solution import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
    "def test_neg():\n    assert add(-1, 1) == 0\n"
)
IMPORT_TESTS = "import solution  # noqa: F401\n\n\ndef test_imported():\n    pass\n"
FAST = SandboxConfig(cpu_s=2, wall_s=4)


@pytest.fixture(scope="module")
def isolated():
    """The sandbox's namespaces work here (as root: the uid drop too); else skip (fail under CI)."""
    namespaces, why = sandbox._namespaces(sandbox._python(SandboxConfig()))
    if namespaces is None:
        unavailable(f"the sandbox cannot isolate programs on this machine: {why}")
    if os.geteuid() != 0:
        unavailable("the uid drop and RLIMIT_NPROC checks need root")


def _uid_processes(uid: int) -> int:
    """How many processes of `uid` run on the machine (the PID namespace must leave none behind)."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uids = next(line for line in f if line.startswith("Uid:")).split()
        except (OSError, StopIteration):
            continue
        count += int(uids[1]) == uid
    return count


def _timed(code: str, cfg: SandboxConfig = FAST, tests: str = IMPORT_TESTS):
    start = time.monotonic()
    verdict = run_tests(code, tests, cfg)
    return verdict, time.monotonic() - start


def test_a_correct_program_passes_and_a_wrong_one_names_its_failing_tests(isolated):
    good = run_tests(ADD, ADD_TESTS, FAST)
    assert good.passed and good.returncode == 0 and (good.tests, good.failed) == (2, [])
    assert good.network_isolated and good.isolation == "namespaces: net, pid, mount" and good.uid == 65534
    bad = run_tests(ADD.replace("a + b", "a + b if a > 0 else a - b"), ADD_TESTS, FAST)
    assert not bad.passed and bad.returncode == 1 and bad.failed == ["test_neg"]
    assert "FAILED test_neg" in bad.stderr and "AssertionError" in bad.stderr
    # a program that exits 0 before the tests run does not pass: the runner's summary is missing
    quitter = run_tests("import os\nos._exit(0)\n", ADD_TESTS, FAST)
    assert quitter.returncode == 0 and quitter.tests == 0 and not quitter.passed
    syntax = run_tests("def add(a, b)\n    return a + b\n", ADD_TESTS, FAST)
    assert not syntax.passed and syntax.failed == ["<import>"] and "SyntaxError" in syntax.stderr


def test_the_program_sees_only_its_directory_and_no_other_process(isolated):
    probe = "import os\nprint(os.getcwd(), os.getuid(), os.getpid(), sorted(os.listdir('/tmp')), dict(os.environ))\n"
    verdict = run_tests(probe, IMPORT_TESTS, FAST)
    assert verdict.passed, verdict.stderr
    assert verdict.stdout.split(" ", 3)[:3] == ["/tmp/sandbox", "65534", "2"]  # PID 2: the jail is PID 1
    assert "['sandbox']" in verdict.stdout
    # an empty environment: only the locale Python itself sets (PEP 538)
    assert verdict.stdout.rstrip().endswith("{'LC_CTYPE': 'C.UTF-8'}")


def test_an_infinite_loop_is_stopped_by_the_cpu_limit(isolated):
    verdict, took = _timed("while True:\n    pass\n", SandboxConfig(cpu_s=1, wall_s=10))
    # SIGXCPU (or SIGKILL at the hard limit) well before the wall clock, however loaded the machine
    assert verdict.limit == "cpu" and verdict.returncode in (-24, -9) and not verdict.timed_out and took < 10


def test_a_sleeper_is_killed_at_the_wall_clock_limit(isolated):
    verdict, took = _timed("import time\ntime.sleep(600)\n", SandboxConfig(wall_s=1.0))
    assert verdict.timed_out and verdict.limit == "wall" and verdict.returncode is None and not verdict.passed
    assert 1.0 <= took < 3


def test_a_fork_bomb_is_capped_and_leaves_no_process_behind(isolated):
    before = _uid_processes(65534)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    verdict, took = _timed(bomb, SandboxConfig(nproc=32, cpu_s=2, wall_s=2.0))
    assert not verdict.passed and verdict.timed_out and took < 5
    time.sleep(0.2)
    assert _uid_processes(65534) <= before
    # the machine stays usable: the next run is as fast as ever
    verdict, took = _timed(ADD, tests=ADD_TESTS)
    assert verdict.passed and took < 3


def test_a_detached_child_dies_with_the_run(isolated):
    code = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
        "    os._exit(0)\nprint('parent done')\n"
    )
    before = _uid_processes(65534)
    verdict, took = _timed(code)
    assert verdict.passed and took < 3
    time.sleep(0.2)
    assert _uid_processes(65534) <= before  # the PID namespace ended with the program


def test_a_memory_bomb_hits_the_address_space_limit(isolated):
    verdict, took = _timed("blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n")
    assert verdict.limit == "memory" and "MemoryError" in verdict.stderr and not verdict.passed and took < 5


def test_no_network_even_to_a_local_listener(isolated):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
        "    print('connected')\nexcept OSError as e:\n    print('blocked', e.errno)\n"
    )
    verdict = run_tests(code, IMPORT_TESTS, FAST)
    assert verdict.network_isolated and verdict.stdout.startswith("blocked"), verdict.stdout
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()


def test_writes_outside_the_directory_fail_and_leave_nothing(isolated):
    token = uuid.uuid4().hex
    targets = [f"{d}/herd-escape-{token}" for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/etc", "")]
    targets.append(f"{os.getcwd()}/herd-escape-{token}")
    code = f"targets = {targets!r}\nfor t in targets:\n"
    code += "    try:\n        open(t, 'w').write('x')\n        print('WROTE', t)\n    except OSError as e:\n"
    code += "        print('denied', e.errno)\nopen('inside.txt', 'w').write('ok')\nprint('inside ok')\n"
    verdict = run_tests(code, IMPORT_TESTS, FAST)
    assert verdict.passed and "WROTE" not in verdict.stdout
    assert verdict.stdout.count("denied") == len(targets) and "inside ok" in verdict.stdout
    assert not [t for t in targets if os.path.exists(t)]


def test_reads_outside_the_directory_fail(isolated, tmp_path):
    secret = tmp_path / "secret.txt"  # under /tmp: hidden by the mount namespace, and root-only besides
    secret.write_text("the secret")
    code = "for p in ['/etc/shadow', '/root', " + repr(str(secret)) + "]:\n"
    code += "    try:\n        print('READ', open(p).read(20) if p != '/root' else __import__('os').listdir(p))\n"
    code += "    except OSError as e:\n        print('denied', type(e).__name__)\n"
    verdict = run_tests(code, IMPORT_TESTS, FAST)
    assert verdict.passed and "READ" not in verdict.stdout and "the secret" not in verdict.stdout
    assert verdict.stdout.split() == ["denied", "PermissionError", "denied", "PermissionError"] + [
        "denied",
        "FileNotFoundError",
    ]


def test_huge_output_is_cut_and_capped_by_the_file_size_limit(isolated):
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    verdict, took = _timed(code, SandboxConfig(file_mb=1, max_output=1000, wall_s=5))
    assert verdict.limit == "file_size" and not verdict.passed and took < 5
    assert verdict.stdout.startswith("x" * 1000) and len(verdict.stdout) < 1100 and "[... cut:" in verdict.stdout


def test_filling_the_disk_stops_at_the_directory_size(isolated):
    code = "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * (1 << 20))\n    i += 1\n"
    verdict, took = _timed(code, SandboxConfig(disk_mb=8, wall_s=5))
    assert verdict.limit == "disk" and "No space left on device" in verdict.stderr and took < 5


def test_the_program_cannot_kill_its_caller_or_its_jail(isolated):
    code = (
        "import os, signal\nfor pid in (os.getppid(), "
        + str(os.getpid())
        + ", 1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n        print('sent', pid)\n"
        "    except OSError as e:\n        print('refused', pid, type(e).__name__)\n"
        "try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError as e:\n    print('refused -1', type(e).__name__)\n"
    )
    verdict = run_tests(code, IMPORT_TESTS, FAST)
    assert verdict.passed, verdict.stderr  # the jail lived to report the program's exit
    assert "refused -1 ProcessLookupError" in verdict.stdout  # kill(-1): no process it may signal
    assert "refused 1 PermissionError" in verdict.stdout  # its parent is the jail, PID 1, root-owned
    assert f"refused {os.getpid()}" in verdict.stdout  # the caller's PID does not exist in its namespace
    assert os.getppid() > 0


def test_a_spawned_shell_is_as_confined_as_the_program(isolated):
    token = uuid.uuid4().hex
    code = (
        "import subprocess\nr = subprocess.run(['/bin/sh', '-c', "
        f"'id -u; echo pwned > /tmp/{token} || echo denied; cat /etc/shadow || echo denied'], "
        "capture_output=True, text=True)\nprint(r.stdout)\n"
    )
    verdict = run_tests(code, IMPORT_TESTS, FAST)
    assert verdict.passed and verdict.stdout.split() == ["65534", "denied", "denied"]
    assert not os.path.exists(f"/tmp/{token}")


def test_without_namespaces_the_verdict_says_so(monkeypatch):
    monkeypatch.setattr(sandbox, "_namespaces", lambda python: (None, "none: unshare failed (test)"))
    verdict = run_tests(ADD, ADD_TESTS, FAST)
    assert verdict.passed and not verdict.network_isolated and verdict.isolation == "none: unshare failed (test)"
    with pytest.raises(RuntimeError, match="require_isolation"):
        run_tests(ADD, ADD_TESTS, SandboxConfig(require_isolation=True))


def test_the_command_line_prints_one_json_verdict(isolated, tmp_path, capsys):
    (tmp_path / "s.py").write_text(ADD)
    (tmp_path / "t.py").write_text(ADD_TESTS)
    assert sandbox.main([f"code={tmp_path / 's.py'}", f"tests={tmp_path / 't.py'}", "wall_s=5", "cpu_s=2"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["passed"] and verdict["tests"] == 2 and verdict["network_isolated"]
    (tmp_path / "s.py").write_text(ADD.replace("+", "*"))
    assert sandbox.main([f"code={tmp_path / 's.py'}", f"tests={tmp_path / 't.py'}"]) == 1
    assert json.loads(capsys.readouterr().out)["failed"] == ["test_add", "test_neg"]
    assert sandbox.main([f"code={tmp_path / 's.py'}"]) == 2
    assert "tests" in capsys.readouterr().err
    assert sandbox.main([f"code={tmp_path / 'missing.py'}", f"tests={tmp_path / 't.py'}"]) == 2
