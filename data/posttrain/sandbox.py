"""The code execution sandbox of execution feedback (paper section 4.3.1): runs an untrusted program and its tests.

    verdict = run_tests(code, tests, SandboxConfig(cpu_s=5, wall_s=10))   # Verdict: passed, output, why it died
    ./bazelw run //data:sandbox -- code=solution.py tests=test_solution.py wall_s=5   # prints the verdict as JSON

The tests are a pytest-style module that imports the program as `solution` and defines `test_*` functions
without arguments (no fixtures). They do not run under pytest: a small runner (`_runner`) imports the module,
calls every `test_*` function in definition order, prints each failure's traceback to stderr, and writes a
summary (tests run, names failed) to a channel of its own (fd 3), so the isolated interpreter needs nothing
but the standard library and a program that exits early with status 0 does not pass (no summary).

Isolation, from the outside in (everything is set up by this module's code before the program's first line):
  - the command is started in a new session (its own process group), with stdout and stderr going to files
    the program cannot open by name, and a wall-clock limit after which the whole group is SIGKILLed;
  - namespaces (util-linux `unshare`): a new network namespace (only a loopback, down: no network at all),
    a new PID namespace (the program sees neither its parent nor any other process; when its first process
    ends, the kernel kills everything it left) and a new mount namespace in which the world-writable
    directories (/tmp, /var/tmp, /dev/shm, /run, ...) are replaced by empty read-only tmpfs mounts and the
    program's files are copied into a tmpfs of `disk_mb` at /tmp/sandbox, its working directory;
  - as root: the program runs as an unprivileged uid (nobody, 65534) that owns only that directory, so it
    cannot read root-only files or write anywhere else, and RLIMIT_NPROC (not enforced for root) applies;
  - resource limits: CPU seconds, address space, processes, file size (which also caps stdout and stderr),
    open files, no core dumps; `python -I` (no environment variables, no user site) with an empty environment.
Where namespaces cannot be made (no unshare, no privileges), the program still runs, with the uid, limits and
group kill, and the verdict says so: `isolation` is "none: ..." and `network_isolated` false;
`require_isolation=true` refuses to run instead. Without namespaces the program can also write to the
world-writable directories, fill the disk up to file_mb per file, and a process that calls setsid() leaves the
group and can outlive the wall kill.

What it does not do: the tests run in the program's interpreter, so a program written to cheat (writing a
summary to fd 3 itself) can pass: the sandbox protects the machine, not the verdict. World-readable files
(/etc/passwd, the system's Python) stay readable. RLIMIT_NPROC counts every process of the uid, so parallel
runs under one uid share `nproc` (give each worker its own `uid`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

MOUNTPOINT = "/tmp/sandbox"  # the program's working directory inside the mount namespace
NOBODY = 65534
# unshare's options, tried in order: as root, then as an unprivileged user through a user namespace.
NAMESPACES = (
    ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"],
    ["--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"],
)


@dataclass
class SandboxConfig:
    cpu_s: int = 5  # CPU seconds per process (SIGXCPU, then SIGKILL one second later)
    wall_s: float = 10.0  # wall-clock limit of the whole run; then the process group is killed
    memory_mb: int = 512  # address space per process
    nproc: int = 32  # processes of the sandbox uid (a fork bomb stops here)
    file_mb: int = 16  # largest file the program may write (stdout and stderr included)
    open_files: int = 64
    disk_mb: int = 64  # size of the program's directory (a tmpfs; without namespaces: not limited)
    max_output: int = 8192  # characters of stdout and of stderr kept in the verdict
    python: str = ""  # the interpreter; "" = this one's base interpreter (no virtualenv packages)
    uid: int = NOBODY  # when running as root: the uid (and gid) the program runs as
    hide: list[str] = field(default_factory=lambda: ["/tmp", "/var/tmp", "/dev/shm", "/run", "/home", "/nix/var"])
    require_isolation: bool = False  # refuse to run (instead of saying so) when namespaces are unavailable


@dataclass
class Verdict:
    passed: bool  # exit status 0, every test ran and passed, no limit hit
    returncode: int | None  # negative: killed by that signal
    timed_out: bool
    limit: str | None  # wall | cpu | memory | processes | file_size | disk | open_files: what stopped it
    wall_s: float
    stdout: str
    stderr: str
    tests: int = 0  # test functions run
    failed: list[str] = field(default_factory=list)  # names of the failing tests
    network_isolated: bool = False
    isolation: str = ""  # "namespaces: net, pid, mount" or "none: <why>"
    uid: int | None = None  # the uid the program ran as

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _jail() -> None:
    """The trusted first process inside the namespaces, run as `python -I -S -c <this source>` with a JSON spec.

    Mounts (when asked), then forks the program: the child sets the limits, drops to the sandbox uid and execs
    the command with an empty environment; this process (PID 1 of the namespace) waits for it, writes its wait
    status to `status_fd`, and exits, which makes the kernel kill whatever the program left behind."""
    import ctypes
    import json
    import os
    import resource
    import sys

    spec = json.loads(sys.argv[1])
    os.set_inheritable(spec["status_fd"], False)
    if spec["mounts"]:
        libc = ctypes.CDLL(None, use_errno=True)

        def mount(source, target, fstype, flags, data):
            if libc.mount(source.encode(), target.encode(), fstype and fstype.encode(), flags, data and data.encode()):
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), target)

        ms_nosuid, ms_nodev, ms_rdonly = 2, 4, 1
        workdir = os.open(spec["workdir"], os.O_RDONLY | os.O_DIRECTORY)  # still reachable once /tmp is hidden
        for path in spec["hide"]:
            if os.path.isdir(path) and not os.path.islink(path):
                mount("tmpfs", path, "tmpfs", ms_nosuid | ms_nodev, "size=64k,mode=755")
        # The program's directory: a tmpfs of disk_mb (a program that fills it fills no disk), with the files.
        os.makedirs(spec["mountpoint"], exist_ok=True)
        owner = "" if spec["uid"] is None else f",uid={spec['uid']},gid={spec['uid']}"
        mount("tmpfs", spec["mountpoint"], "tmpfs", ms_nosuid | ms_nodev, f"size={spec['disk_mb']}m,mode=700{owner}")
        for name in os.listdir(workdir):
            source = os.open(name, os.O_RDONLY, dir_fd=workdir)
            with os.fdopen(source, "rb") as f, open(os.path.join(spec["mountpoint"], name), "wb") as out:
                out.write(f.read())
            if spec["uid"] is not None:
                os.chown(os.path.join(spec["mountpoint"], name), spec["uid"], spec["uid"])
        for path in spec["hide"]:  # read-only once the mount point exists (the mount on it stays writable)
            if os.path.isdir(path) and not os.path.islink(path):
                mount("tmpfs", path, None, 32 | ms_rdonly | ms_nosuid | ms_nodev, None)  # 32: MS_REMOUNT
        os.chdir(spec["mountpoint"])
        os.close(workdir)
    else:
        os.chdir(spec["workdir"])
    pid = os.fork()
    if pid == 0:
        os.dup2(spec["summary_fd"], 3)  # the program's summary channel is fd 3
        for name, value in spec["limits"].items():
            soft, hard = value if isinstance(value, list) else (value, value)
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if spec["uid"] is not None:
            os.setgroups([])
            os.setgid(spec["uid"])
            os.setuid(spec["uid"])
        os.execve(spec["argv"][0], spec["argv"], {})
    _, status = os.waitpid(pid, 0)
    os.write(spec["status_fd"], str(status).encode())


def _runner() -> None:
    """Runs the tests inside the sandbox: `python -I _runner.py` next to solution.py and test_solution.py."""
    import json
    import os
    import sys
    import traceback

    summary = os.fdopen(3, "w")
    os.set_inheritable(3, False)
    sys.path.insert(0, os.getcwd())  # -I leaves the script's directory off sys.path
    tests, failed = [], []
    try:
        import test_solution

        tests = [f for name, f in vars(test_solution).items() if name.startswith("test_") and callable(f)]
    except BaseException:
        traceback.print_exc()
        failed.append("<import>")
    for test in tests:
        try:
            test()
        except BaseException:
            print(f"FAILED {test.__name__}", file=sys.stderr)
            traceback.print_exc()
            failed.append(test.__name__)
    sys.stdout.flush()
    summary.write(json.dumps({"tests": len(tests), "failed": failed}))
    summary.close()
    sys.exit(1 if failed or not tests else 0)


def _source(function) -> str:
    """A function's source plus a call of it: the programs the two trusted stages run with `python -c`."""
    return f"{inspect.getsource(function)}\n{function.__name__}()\n"


def _python(cfg: SandboxConfig) -> str:
    """The interpreter: cfg.python, else this one's base interpreter when every uid may run it (pyenv's under
    /root is not), else the system's python3."""
    if cfg.python:
        return cfg.python
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if os.geteuid() != 0 or _world_executable(base):
        return base
    return os.path.realpath(shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or base)


def _world_executable(path: str) -> bool:
    """Whether any uid may execute `path`: it and every directory above it have the others' x bit."""
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


@functools.cache
def _namespaces(python: str) -> tuple[list[str] | None, str]:
    """The unshare options that work on this machine (probed once), and why none does when none does."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None, "none: util-linux unshare is not installed"
    reason = ""
    for options in NAMESPACES[0 if os.geteuid() == 0 else 1 :]:
        probe = subprocess.run([unshare, *options, python, "-I", "-S", "-c", ""], capture_output=True, text=True)
        if probe.returncode == 0:
            return [unshare, *options], "namespaces: net, pid, mount"
        reason = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else f"exit {probe.returncode}"
    return None, f"none: unshare failed ({reason})"


def _limits(cfg: SandboxConfig) -> dict:
    mb = 1 << 20
    return {
        "RLIMIT_CPU": [cfg.cpu_s, cfg.cpu_s + 1],  # SIGXCPU at the soft limit, SIGKILL at the hard one
        "RLIMIT_AS": cfg.memory_mb * mb,
        "RLIMIT_NPROC": cfg.nproc,
        "RLIMIT_FSIZE": cfg.file_mb * mb,
        "RLIMIT_NOFILE": cfg.open_files,
        "RLIMIT_CORE": 0,
    }


def _read_cut(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit * 4)  # at most 4 bytes per character
        rest = os.fstat(f.fileno()).st_size - len(data)
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit or rest > 0:
        return text[:limit] + f"\n[... cut: {len(text) - limit + rest} more characters/bytes]"
    return text


def _which_limit(returncode: int | None, stderr: str, timed_out: bool) -> str | None:
    """The limit that stopped the program, read from how it ended (its signal, or the error in its stderr)."""
    if timed_out:
        return "wall"
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "cpu"
    if returncode == -signal.SIGXFSZ:
        return "file_size"
    for marker, limit in (
        ("MemoryError", "memory"),
        ("Cannot allocate memory", "memory"),
        ("File too large", "file_size"),
        ("No space left on device", "disk"),
        ("Too many open files", "open_files"),
        ("Resource temporarily unavailable", "processes"),
    ):
        if marker in stderr:
            return limit
    return None


def execute(files: dict[str, str], argv: list[str], cfg: SandboxConfig) -> Verdict:
    """Write `files` into a fresh directory and run `argv` there under every limit (argv[0]: an absolute path).

    The command gets fd 3 for a summary (see _runner); a JSON summary there sets `tests` and `failed`."""
    namespaces, isolation = _namespaces(_python(cfg))
    if namespaces is None and cfg.require_isolation:
        raise RuntimeError(f"the sandbox cannot isolate the program ({isolation}) and require_isolation is set")
    as_root = os.geteuid() == 0
    uid = cfg.uid if as_root else None
    with tempfile.TemporaryDirectory(prefix="herd-sandbox-") as private:
        work = os.path.join(private, "work")  # `private` stays root-only: the output files live there
        os.mkdir(work, 0o700)
        for name, text in files.items():
            with open(os.path.join(work, name), "w", encoding="utf-8") as f:
                f.write(text)
        if uid is not None:
            for path in [work, *(os.path.join(work, name) for name in files)]:
                os.chown(path, uid, uid)
            os.chmod(private, 0o711)  # the sandbox uid may pass through to `work`, never list or write here
        spec = {
            "workdir": work,
            # under a hidden directory, else (hide changed) over `work` itself: either way only in the namespace
            "mountpoint": MOUNTPOINT if any(MOUNTPOINT.startswith(h.rstrip("/") + "/") for h in cfg.hide) else work,
            "disk_mb": cfg.disk_mb,
            "mounts": namespaces is not None,
            "hide": [h for h in cfg.hide if not _python(cfg).startswith(h.rstrip("/") + "/")],  # keep the interpreter
            "limits": _limits(cfg),
            "uid": uid,
            "argv": argv,
        }
        out_path, err_path = os.path.join(private, "stdout"), os.path.join(private, "stderr")
        summary_r, summary_w = os.pipe()
        status_r, status_w = os.pipe()
        spec["status_fd"], spec["summary_fd"] = status_w, summary_w
        command = [*(namespaces or []), _python(cfg), "-I", "-S", "-c", _source(_jail), json.dumps(spec)]
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={},
                start_new_session=True,
                pass_fds=(summary_w, status_w),
            )
        os.close(summary_w)
        os.close(status_w)
        timed_out = False
        try:
            proc.wait(timeout=cfg.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc)
        wall = time.monotonic() - start
        status_text = _drain(status_r)
        summary_text = _drain(summary_r)
        returncode = _returncode(status_text, proc.returncode, timed_out)
        stdout, stderr = _read_cut(out_path, cfg.max_output), _read_cut(err_path, cfg.max_output)
    try:
        summary = json.loads(summary_text)
    except ValueError:
        summary = {}
    limit = _which_limit(returncode, stderr, timed_out)
    tests, failed = int(summary.get("tests", 0)), list(summary.get("failed", []))
    return Verdict(
        passed=returncode == 0 and not timed_out and limit is None and bool(summary) and tests > 0 and not failed,
        returncode=returncode,
        timed_out=timed_out,
        limit=limit,
        wall_s=round(wall, 3),
        stdout=stdout,
        stderr=stderr,
        tests=tests,
        failed=failed,
        network_isolated=namespaces is not None,
        isolation=isolation,
        uid=uid,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group (the jail and, without a PID namespace, whatever stayed in the group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _drain(fd: int) -> str:
    """Everything written to a pipe whose writers are all gone (the group was killed: nothing blocks)."""
    chunks = []
    os.set_blocking(fd, False)
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 1 << 20:  # a summary is small; more is the program writing to fd 3
                break
    except BlockingIOError:  # a writer survived (only possible without a PID namespace)
        pass
    os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _returncode(status: str, jail_code: int | None, timed_out: bool) -> int | None:
    """The program's exit code from the wait status the jail reported (negative: the killing signal)."""
    if timed_out:
        return None
    if not status.strip().isdigit():
        return jail_code  # the jail itself failed before the program ran; its stderr says why
    code = int(status)
    return -os.WTERMSIG(code) if os.WIFSIGNALED(code) else os.WEXITSTATUS(code)


def run_tests(code: str, tests: str, cfg: SandboxConfig | None = None) -> Verdict:
    """Run `tests` (a module that imports the program as `solution`) against `code` in the sandbox."""
    cfg = cfg or SandboxConfig()
    files = {"solution.py": code, "test_solution.py": tests, "_runner.py": _source(_runner)}
    return execute(files, [_python(cfg), "-I", "_runner.py"], cfg)


@dataclass
class SandboxCli(SandboxConfig):
    code: str = "???"  # the program (a Python file); required
    tests: str = "???"  # its tests (a Python file that imports it as `solution`); required


def main(argv: list[str] | None = None) -> int:
    """Print one JSON verdict; exit 0 when the tests passed, 1 when not, 2 on a usage error."""
    from tools.config import ConfigError, parse
    from tools.paths import user_path

    try:
        cli = parse(SandboxCli, sys.argv[1:] if argv is None else argv)
        code, tests = (user_path(p).read_text(encoding="utf-8") for p in (cli.code, cli.tests))
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = SandboxConfig(**{k: v for k, v in asdict(cli).items() if k not in ("code", "tests")})
    verdict = run_tests(code, tests, cfg)
    print(verdict.to_json())
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
