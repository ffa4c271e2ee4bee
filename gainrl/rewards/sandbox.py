"""Sandboxed execution of untrusted, model-written Python programs, with a harness-decided verdict.

`run(job)` runs one `Job` (an untrusted `solution`, then trusted `tests`) in a fresh process tree
and returns a `SandboxResult`; `run_many(jobs)` runs a batch on a thread pool (one subprocess per
thread, one thread per usable core) and returns results in input order. `isolation_mode()` and
`network_isolation()` say which barriers are in force here (probed once at first use, logged).

Processes. The caller starts a *supervisor* (`python -S -s -P -c <the text of sandbox_child.py>`:
no site hooks, no user site, no cwd on sys.path; only the interpreter's site-packages are added,
so numpy imports but the caller's cwd, PYTHONPATH and editable installs do not) in its own session
with a scrubbed environment (PATH, LANG/LC_ALL, HOME=TMPDIR=the sandbox dir, PYTHONHASHSEED=0,
one BLAS thread; nothing of the caller's). It writes the job to the supervisor's stdin and reads
stdout/stderr incrementally (a tail of each is kept; past `max_output_bytes` in total the run is
killed) and a private result pipe. The supervisor forks a *worker* (own process group, limits,
seccomp, then the harness) and waits under the wall-time limit, then kills every descendant. The
caller keeps a backstop deadline and kills the whole session; it never becomes a subreaper.

Isolation modes:
* "namespace" (unprivileged user namespaces work and util-linux `unshare` exists): the
  supervisor is pid 1 of new user, mount, pid, network, ipc and uts namespaces (`unshare --user
  --map-root-user --net --pid --fork --kill-child --mount-proc`). It remounts every mount
  read-only, mounts a fresh size-limited tmpfs on /tmp (the program's cwd and HOME; it vanishes
  with the namespace), builds a minimal /dev (null, zero, full, random, urandom, shm), covers
  `hide_paths` with empty read-only mounts, then enters a nested user+mount namespace so that
  nothing of this can be undone. Guaranteed: no network (only a down loopback), no writes outside
  /tmp and /dev/shm, the host's /tmp (pytest dirs, other sandboxes) and other processes (the
  caller's environ included) are invisible, and every descendant dies with pid 1 (setsid() does
  not help). Not hidden: whatever else the caller's uid can read (the repo, HOME; use hide_paths).
* "process" (fallback): the supervisor is a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so
  descendants that call setsid() become its children when their parent dies and are killed and
  reaped; cwd, HOME and TMPDIR are a fresh directory under `Limits.tmp_root`, removed afterwards
  (permissions repaired first, symlinks never followed). NOT prevented in this mode: writes to
  absolute paths the caller's uid may write, reading what it may read (including
  /proc/<caller>/environ and, without Yama, /proc/<caller>/mem), signalling other same-uid
  processes by pid (the supervisor and the caller are protected by seccomp, see below).

seccomp (both modes, when the kernel allows it; inherited across fork and exec): socket(),
io_uring, ptrace, process_vm_*, tkill and kill(-1, ...) fail with EPERM; in process mode also any
signal to the supervisor or the caller (by pid, process group or pidfd) and prlimit on other
processes. Without seccomp and namespaces, a prelude replaces `_socket.socket` before user code
runs, which blocks sockets in the interpreter only, not in programs it starts.
`network_isolation()`: "namespace", "seccomp" or "in-process" accordingly.

Limits (`Limits`): RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0 and
RLIMIT_NPROC in the worker; wall time in the supervisor (plus the caller's backstop). RLIMIT_NPROC
counts all threads of the real uid on the machine (per user namespace on kernels >= 5.14, where
it is looser), so it is set to the uid's current thread count (read from /proc by the caller,
cached 1 s, plus room for the caller's sandboxes in flight) + `max_processes`. The kernel ignores
RLIMIT_NPROC for root, so where a pids cgroup is writable (root, or a delegated subtree) each run
gets its own with pids.max = `max_processes` + 2, joined by the supervisor before it forks; as root
the worker also runs at nice 19 and the supervisor counts the program's processes every 10 ms
(pid namespace) or 50 ms (process mode: a /proc walk), killing the tree past `max_processes`
("process_limit"). `process_cap()` says which cap holds: "cgroup", "rlimit" or "guard" (root
without a cgroup: best effort, a fast fork bomb can outrun it for a while). One killpg() of the
worker's own process group stops a fork bomb atomically.

Verdict. The harness decides, not the exit code. The caller draws a random token per run and
passes it on the supervisor's stdin (never in the program text); the harness holds it in a local
and writes token-prefixed records to the result pipe, and a run passes only if the harness itself
reaches the end of the tests in the original worker process. Covered: `sys.exit(0)`, `os._exit(0)`,
`raise SystemExit`, killing itself or its supervisor, printing fake results (on any fd), a forked
child finishing the tests, overriding builtins (`print`, `exit`, `AssertionError`, `zip`,
`__import__`, ...: restored after the solution, and the tests get a private copy, so patching them
during the tests does not help), shadowing builtins or test helpers with globals (`check`,
`assertion`, `zip`: the tests run in their own namespace, which keeps the solution's other globals
and the entry point), planting fake modules in `sys.modules` (the tests' imports are done before the
solution runs and restored after it), and returning objects that fake comparisons: what the entry
point returns must be plain data, built from exact builtin types taken before the solution ran (an
always-true `__eq__`, a lying int subclass, a lazy iterator fail the check as `not_plain_data`, even
if the test catches the exception), and redefining the helpers a check calls: with `Job.trusted`
(HumanEval's prompt) the tests see the prompt's `poly` or `encode_cyclic`, not the program's. Not
covered (threat model): a program that deliberately introspects the harness (frames, `gc`, its own
memory, tracing) can find the token or skip asserts; patching attributes of modules the tests use
(`numpy.allclose = ...`) fools the tests themselves; kernel exploits. The sandbox protects rewards
against common reward hacking and the caller against runaway or crude hostile programs.
"""
from __future__ import annotations

import logging
import marshal
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Union

logger = logging.getLogger(__name__)

PASSED, FAILED, TIMEOUT, ERROR = "passed", "failed", "timeout", "error"
STATUSES = (PASSED, FAILED, TIMEOUT, ERROR)
NAMESPACE, PROCESS = "namespace", "process"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Defaults fit HumanEval+/MBPP+ (numpy, heavy tests up to ~60 s CPU)."""
    wall_s: float = 120.0  # wall clock, enforced by the supervisor (the caller adds a backstop)
    cpu_s: float = 90.0  # RLIMIT_CPU of the worker (each child process has its own budget)
    memory_bytes: int = 4 << 30  # RLIMIT_AS (address space); numpy's import needs ~150 MiB of it
    max_processes: int = 64  # processes/threads the program may add (RLIMIT_NPROC headroom)
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_file_bytes: int = 64 << 20  # RLIMIT_FSIZE: a larger write kills the program (SIGXFSZ)
    disk_bytes: int = 256 << 20  # size of the private /tmp tmpfs (namespace mode)
    max_output_bytes: int = 16 << 20  # stdout+stderr read in total before the program is killed
    keep_output_bytes: int = 16 << 10  # tail of stdout and of stderr kept in the result
    tmp_root: Optional[str] = None  # where process mode creates its directories (default: tempfile's)

    def __post_init__(self):
        for name in ("wall_s", "cpu_s", "memory_bytes", "max_processes", "max_open_files", "max_file_bytes",
                     "disk_bytes", "max_output_bytes", "keep_output_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Job:
    """One program: untrusted `solution` code, then trusted `tests` run in a protected namespace.

    `entry_point`: a solution global the tests may see even if it shadows a builtin (MBPP's `sum`).
    `split_tests`: run each top-level `assert` of `tests` separately and count them (other
    top-level statements are setup; a failing setup statement fails the remaining checks).
    Without top-level asserts the tests are one check.
    `trusted`: code run before the solution (HumanEval's prompt) whose top-level names, but the entry
    point, the tests see in place of the solution's: a check that calls a helper the prompt defines
    (`poly`, `encode_cyclic`) calls the prompt's, whatever the program redefined.
    """
    solution: str
    tests: str = ""
    entry_point: str = ""
    split_tests: bool = False
    name: str = ""
    trusted: str = ""

    def __post_init__(self):
        for field in ("solution", "tests", "entry_point", "name", "trusted"):
            if not isinstance(getattr(self, field), str):
                raise ValueError(f"job {self.name!r}: {field} must be a str, got {type(getattr(self, field)).__name__}")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run. `status` is passed/failed/timeout/error (error: the sandbox itself broke).

    `reason` says why: "" when passed; for failed: assertion, exception, solution_error,
    syntax_error, system_exit, memory, not_plain_data (the entry point returned something other than
    plain builtin data), exit_without_result, killed_by_signal, file_size_limit,
    process_limit, output_limit, supervisor_killed; for timeout: wall_timeout, cpu_limit; for
    error: sandbox_error, bad_tests. `passed_checks`/`total_checks` count the test checks (with
    `Job.split_tests`; otherwise 0 or 1 of 1), also after a timeout.
    """
    status: str
    reason: str
    detail: str
    passed_checks: int
    total_checks: int
    wall_s: float
    cpu_s: Optional[float]
    max_rss_mb: Optional[float]
    stdout: str  # tail
    stderr: str  # tail
    output_bytes: int  # stdout + stderr bytes read in total
    mode: str  # "namespace" or "process"
    network: str  # "namespace", "seccomp" or "in-process"
    notes: tuple = ()  # supervisor remarks, e.g. "writable:/some/mount" when a remount failed

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def fraction(self) -> float:
        if self.passed:
            return 1.0
        return self.passed_checks / self.total_checks if self.total_checks else 0.0


# ===================================================================================== caller side
_CHILD_SOURCE: Optional[str] = None
_CHILD_LOCK = threading.Lock()


def _child_source() -> str:
    global _CHILD_SOURCE
    with _CHILD_LOCK:
        if _CHILD_SOURCE is None:
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py"),
                      encoding="utf-8") as f:
                text = f.read()
            header = "import sys\nsys.path.extend(%r)\n" % (_site_dirs(),)
            _CHILD_SOURCE = header + text + "\n_child_main()\n"
        return _CHILD_SOURCE


def _site_dirs() -> List[str]:
    """The interpreter's site-packages (numpy lives there); the child runs with -S, so no .pth file runs
    (an editable install of this project is not importable in the sandbox)."""
    import site
    return [path for path in site.getsitepackages() if os.path.isdir(path)]


def _child_env(home: str) -> dict:
    """The program's whole environment: nothing of the caller's leaks in."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home,
           "TMPDIR": home, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONIOENCODING": "utf-8", "PYTHONNOUSERSITE": "1", "PYTHONSAFEPATH": "1"}
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                 "VECLIB_MAXIMUM_THREADS"):
        env[name] = "1"  # one BLAS thread: no per-thread buffers eating address space, no oversubscription
    return env


_TASKS = {"at": -1.0, "count": 0, "in_flight": 0}
_TASKS_LOCK = threading.Lock()
_TASKS_PER_RUN = 4  # unshare, supervisor, worker, and one spare


def _user_task_count() -> int:
    """Threads of the caller's real uid on this machine (what RLIMIT_NPROC counts; cached for 1 s), plus
    room for the sandboxes this process has in flight (started since the count was taken)."""
    with _TASKS_LOCK:
        now = time.monotonic()
        if now - _TASKS["at"] >= 1.0:
            uid, count = str(os.getuid()), 0
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                try:
                    with open("/proc/" + name + "/status", "rb") as f:
                        fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
                    if fields[b"Uid"].split()[0].decode() == uid:
                        count += int(fields[b"Threads"])
                except (OSError, KeyError, ValueError, IndexError):
                    continue
            _TASKS.update(at=now, count=count)
        return _TASKS["count"] + _TASKS_PER_RUN * _TASKS["in_flight"]


def _in_flight(delta: int) -> None:
    with _TASKS_LOCK:
        _TASKS["in_flight"] += delta


_CGROUP = {"probed": False, "base": None, "stale": []}
_CGROUP_LOCK = threading.Lock()


def _pids_cgroup_base() -> Optional[str]:
    """A pids-controller cgroup directory this process may create children in (probed once), else None.

    Used to cap the number of tasks of a run with pids.max: RLIMIT_NPROC does not bind root, and a
    cgroup is usually writable only by root (or under a delegated systemd slice).
    """
    with _CGROUP_LOCK:
        if not _CGROUP["probed"]:
            _CGROUP["probed"] = True
            _CGROUP["base"] = _make_cgroup_base()
            if _CGROUP["base"]:
                import atexit
                atexit.register(_remove_cgroup_base)
        return _CGROUP["base"]


def _make_cgroup_base() -> Optional[str]:
    try:
        v1 = v2 = None
        with open("/proc/self/mountinfo") as f:
            for line in f:
                before, _, after = line.partition(" - ")
                fstype, _, options = (after.split() + ["", "", ""])[:3]
                if fstype == "cgroup" and "pids" in options.split(","):
                    v1 = before.split()[4]
                elif fstype == "cgroup2":
                    v2 = before.split()[4]
        own = {}
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(",") if controllers else [""]:
                    own[controller] = path
        parent = os.path.join(v1, own["pids"].lstrip("/")) if v1 and "pids" in own else (
            os.path.join(v2, own[""].lstrip("/")) if v2 and "" in own else None)
        if parent is None:
            return None
        _remove_stale_cgroups(parent)
        base = os.path.join(parent, f"gainrl-sandbox-{os.getpid()}")
        os.mkdir(base)
        if not os.path.exists(os.path.join(base, "pids.max")):
            os.rmdir(base)
            return None
        return base
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _remove_stale_cgroups(parent: str) -> None:
    """Remove the (empty) cgroups left by sandbox users that died without running atexit."""
    for name in os.listdir(parent):
        owner = name[len("gainrl-sandbox-"):]
        if not (name.startswith("gainrl-sandbox-") and owner.isdigit()) or os.path.exists(f"/proc/{owner}"):
            continue
        stale = os.path.join(parent, name)
        for child in os.listdir(stale):
            if os.path.isdir(os.path.join(stale, child)):
                try:
                    os.rmdir(os.path.join(stale, child))
                except OSError:
                    pass
        try:
            os.rmdir(stale)
        except OSError:
            pass


def _new_cgroup(token: str, limits: Limits) -> Optional[str]:
    base = _pids_cgroup_base()
    if base is None:
        return None
    path = os.path.join(base, token[:16])
    try:
        os.mkdir(path)
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(limits.max_processes + 2))  # + the supervisor and the worker
        return path
    except OSError as exc:
        logger.warning("sandbox: could not set up the pids cgroup %s: %s", path, exc)
        _remove_cgroup(path)
        return None


def _remove_cgroup(path: str) -> None:
    for _ in range(100):  # its last tasks may still be exiting
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    with _CGROUP_LOCK:
        _CGROUP["stale"].append(path)


def _remove_cgroup_base() -> None:
    for path in _CGROUP["stale"] + [_CGROUP["base"]]:
        try:
            os.rmdir(path)
        except OSError:
            pass


def process_cap() -> str:
    """How the number of a program's tasks is capped here: "cgroup" (pids.max), "rlimit" (RLIMIT_NPROC,
    not root) or "guard" (root without a writable pids cgroup: only the supervisor's periodic count,
    which a fast fork bomb can outrun for a while)."""
    if _pids_cgroup_base():
        return "cgroup"
    return "guard" if os.geteuid() == 0 else "rlimit"


def _remove_tree(path: str) -> None:
    """Delete a sandbox directory whatever the program did to its permissions; never follows symlinks."""
    if os.path.islink(path):
        os.unlink(path)
        return
    if not os.path.isdir(path):
        return
    stack = [path]
    while stack:
        directory = stack.pop()
        try:
            os.chmod(directory, 0o700)
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        logger.warning("sandbox: could not remove %s", path)


class _Tail:
    """The last `keep` bytes of a stream, and how many bytes went by."""

    def __init__(self, keep: int):
        self.keep, self.total, self.data = keep, 0, bytearray()

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data += chunk[-self.keep:]
        if len(self.data) > self.keep:
            del self.data[:len(self.data) - self.keep]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _exited(pid: int) -> bool:
    """Has `pid` exited? Does not reap it (its pgid stays reserved until we do)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _communicate(proc, result_r, payload: bytes, deadline: float, limits: Limits):
    """Feed stdin, read stdout/stderr tails and the result pipe until all close or a limit hits."""
    stdout, stderr = _Tail(limits.keep_output_bytes), _Tail(limits.keep_output_bytes)
    results = bytearray()
    sel = selectors.DefaultSelector()
    sinks = {proc.stdout.fileno(): stdout, proc.stderr.fileno(): stderr, result_r: None}
    for fd in sinks:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    stdin_fd, sent = proc.stdin.fileno(), 0
    os.set_blocking(stdin_fd, False)
    sel.register(stdin_fd, selectors.EVENT_WRITE)
    killed, exited_at = "", None
    open_reads = len(sinks)
    try:
        while open_reads:
            now = time.monotonic()
            if now >= deadline:
                killed = "wall_timeout"
                break
            if exited_at is None and _exited(proc.pid):
                exited_at = now
            if exited_at is not None and now - exited_at > 2.0:
                break  # the supervisor is gone; something it could not kill holds a pipe open
            for key, _ in sel.select(timeout=min(0.25, deadline - now)):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        sent += os.write(fd, payload[sent:sent + (1 << 16)])
                    except BlockingIOError:
                        continue
                    except OSError:  # the supervisor died before reading everything
                        sent = len(payload)
                    if sent >= len(payload):
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(fd)
                    open_reads -= 1
                    continue
                sink = sinks[fd]
                if sink is None:
                    if len(results) < (1 << 20):
                        results += chunk
                    continue
                sink.add(chunk)
                if stdout.total + stderr.total > limits.max_output_bytes:
                    killed = "output_limit"
                    return stdout, stderr, bytes(results), killed
    finally:
        sel.close()
    return stdout, stderr, bytes(results), killed


def _kill_group_and_reap(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader is not reaped yet, so the pgid is still ours
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def _parse_records(results: bytes, token: str):
    records = {"I": None, "P": None, "R": None, "L": None}
    prefix = token + " "
    for line in results.decode("utf-8", "replace").split("\n"):
        if not line.startswith(prefix):
            continue
        kind, _, rest = line[len(prefix):].partition(" ")
        if kind == "P" or (kind in records and records[kind] is None):
            records[kind] = rest  # the last progress record, the first of the others
    return records


def _parse_launcher(text: Optional[str]) -> Optional[dict]:
    """The supervisor's `key=value ...` record; numbers parsed, "-" is None."""
    if not text:
        return None
    record = {}
    for item in text.split(" "):
        key, _, value = item.partition("=")
        if value == "-":
            record[key] = None
        elif key in ("exit", "signal", "maxrss_kb", "leftovers_killed"):
            record[key] = int(value) if value.lstrip("-").isdigit() else None
        elif key in ("cpu_s", "elapsed_s"):
            try:
                record[key] = float(value)
            except ValueError:
                record[key] = None
        else:
            record[key] = value
    return record


def _decode_detail(text: str) -> str:
    if text in ("", "-"):
        return ""
    try:
        return bytes.fromhex(text).decode("utf-8", "replace")
    except ValueError:
        return ""


def _verdict(records, killed: str, limits: Limits, stderr_tail: str):
    """(status, reason, detail, passed, total, cpu_s, max_rss_mb) from what came back."""
    passed = total = 0
    if records["P"]:
        try:
            passed, _, total = (int(x) for x in records["P"].split()[:3])
        except ValueError:
            pass
    launcher = _parse_launcher(records["L"])
    cpu_s = launcher.get("cpu_s") if launcher else None
    rss = launcher["maxrss_kb"] / 1024 if launcher and launcher.get("maxrss_kb") is not None else None
    if records["R"]:
        fields = records["R"].split(" ")
        if len(fields) >= 5 and fields[0] in (PASSED, FAILED, ERROR):
            reason = "" if fields[1] == "-" else fields[1]
            return (fields[0], reason, _decode_detail(fields[4]), int(fields[2]), int(fields[3]), cpu_s, rss)
    if killed == "output_limit":
        return FAILED, "output_limit", "", passed, total, cpu_s, rss
    if launcher is not None:
        reason, sig, code = launcher.get("reason"), launcher.get("signal"), launcher.get("exit")
        if reason == "wall_timeout":
            return TIMEOUT, "wall_timeout", "", passed, total, cpu_s, rss
        if reason == "process_limit":
            return FAILED, "process_limit", f"more than {limits.max_processes} processes", passed, total, cpu_s, rss
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s is not None and cpu_s >= limits.cpu_s - 0.05):
            return TIMEOUT, "cpu_limit", f"cpu {cpu_s:.1f} s", passed, total, cpu_s, rss
        if sig == signal.SIGXFSZ:
            return FAILED, "file_size_limit", "", passed, total, cpu_s, rss
        if sig is not None:
            return FAILED, "killed_by_signal", signal.Signals(sig).name, passed, total, cpu_s, rss
        if code is not None:
            return FAILED, "exit_without_result", f"exit code {code}", passed, total, cpu_s, rss
    if killed == "wall_timeout":
        return TIMEOUT, "wall_timeout", "killed by the caller", passed, total, cpu_s, rss
    if records["I"] is not None:
        return FAILED, "supervisor_killed", "", passed, total, cpu_s, rss
    return ERROR, "sandbox_error", stderr_tail[-2000:], passed, total, cpu_s, rss


_ISOLATION: Optional[tuple] = None
_WARNED: dict = {}
_ISOLATION_LOCK = threading.Lock()
_UNSHARE_ARGS = ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--ipc",
                 "--uts")


def _run(job: Job, limits: Limits, mode: str, hide_paths: Sequence[str]) -> SandboxResult:
    token = secrets.token_hex(16)
    workdir = None
    argv = [sys.executable, "-S", "-s", "-P", "-c", _child_source()]
    if mode == NAMESPACE:
        argv = [shutil.which("unshare") or "unshare", *_UNSHARE_ARGS, "--", *argv]
        home, cwd = "/tmp", "/"
    else:
        workdir = tempfile.mkdtemp(prefix="gainrl-sbx-", dir=limits.tmp_root)
        home = cwd = workdir
    cgroup = _new_cgroup(token, limits)
    result_r, result_w = os.pipe()
    msg = {"token": token, "result_fd": result_w, "mode": mode, "hide_paths": [os.path.abspath(p) for p in hide_paths],
           "cgroup": cgroup,
           "nproc": _user_task_count() + limits.max_processes,
           "limits": {"wall_s": limits.wall_s, "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes,
                      "max_processes": limits.max_processes, "max_open_files": limits.max_open_files,
                      "max_file_bytes": limits.max_file_bytes, "disk_bytes": limits.disk_bytes},
           "job": {"solution": job.solution, "tests": job.tests, "entry_point": job.entry_point, "trusted": job.trusted,
                   "split_tests": job.split_tests}}
    payload = marshal.dumps(msg)
    started = time.monotonic()
    _in_flight(+1)
    try:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(result_w,), cwd=cwd, env=_child_env(home), start_new_session=True)
        finally:
            os.close(result_w)
        try:
            deadline = started + limits.wall_s + 5.0 + 0.1 * limits.wall_s
            stdout, stderr, results, killed = _communicate(proc, result_r, payload, deadline, limits)
        finally:
            _kill_group_and_reap(proc)
        records = _parse_records(results, token)
        if mode == PROCESS and records["L"] is None and records["I"]:
            # the supervisor died before cleaning up (the backstop killed it): kill the worker's process group
            worker = records["I"].split(" ")[-1]
            if worker.isdigit() and int(worker) > 1:
                try:
                    os.killpg(int(worker), signal.SIGKILL)
                except OSError:
                    pass
    except OSError as exc:
        return SandboxResult(ERROR, "sandbox_error", f"{type(exc).__name__}: {exc}", 0, 0,
                             time.monotonic() - started, None, None, "", "", 0, mode, "")
    finally:
        _in_flight(-1)
        os.close(result_r)
        if workdir is not None:
            _remove_tree(workdir)
        if cgroup is not None:
            _remove_cgroup(cgroup)
    wall = time.monotonic() - started
    status, reason, detail, passed, total, cpu_s, rss = _verdict(records, killed, limits, stderr.text())
    if mode == NAMESPACE:
        network = NAMESPACE
    else:
        network = "seccomp" if (records["I"] or "").startswith("1") else "in-process"
    launcher = _parse_launcher(records["L"]) or {}
    notes = tuple(launcher["notes"].split(",")) if launcher.get("notes") else ()
    return SandboxResult(status, reason, detail, passed, total, wall, cpu_s, rss, stdout.text(), stderr.text(),
                         stdout.total + stderr.total, mode, network, notes)


def _probe() -> tuple:
    """(mode, network): namespaces if a small job passes inside them, else process mode.

    The job imports a stdlib module and numpy (when the caller has it): an interpreter that lives
    under /tmp, hidden by the sandbox's own /tmp, fails the probe and falls back to process mode.
    """
    import importlib.util
    limits = Limits(wall_s=30.0, cpu_s=10.0)
    probe = Job("import decimal\n" + ("import numpy\n" if importlib.util.find_spec("numpy") else ""), name="probe")
    why = "no unshare binary"
    if shutil.which("unshare"):
        result = _run(probe, limits, NAMESPACE, ())
        if result.passed:
            if result.notes:
                logger.warning("sandbox: namespace setup notes: %s", ", ".join(result.notes))
            return NAMESPACE, NAMESPACE
        why = f"{result.status}/{result.reason}: {result.detail[-300:]}"
    result = _run(probe, limits, PROCESS, ())
    if not result.passed:
        raise RuntimeError(f"sandbox: even process mode fails here: {result.status}/{result.reason}: {result.detail}")
    logger.warning("sandbox: namespace mode failed its probe (%s); using process mode (weaker: see the module "
                   "docstring; an interpreter under /tmp is hidden by the sandbox's own /tmp)", why)
    return PROCESS, result.network


def _isolation() -> tuple:
    global _ISOLATION
    with _ISOLATION_LOCK:
        if _ISOLATION is None:
            _ISOLATION = _probe()
            logger.info("sandbox: isolation mode %s, network barrier %s", *_ISOLATION)
        return _ISOLATION


def isolation_mode() -> str:
    """"namespace" or "process": what `run(..., isolation="auto")` uses here (probed once)."""
    return _isolation()[0]


def network_isolation() -> str:
    """"namespace" (own network namespace), "seccomp" (socket() denied by a filter) or "in-process"
    (socket creation blocked inside the interpreter only): the barrier in force by default here."""
    return _isolation()[1]


def run(job: Job, limits: Optional[Limits] = None, *, isolation: str = "auto",
        hide_paths: Sequence[str] = ()) -> SandboxResult:
    """Run one job in the sandbox. `isolation`: "auto", "namespace" or "process".

    `hide_paths` (namespace mode): directories/files covered by empty read-only mounts; must not
    contain the interpreter or its packages.
    """
    if not isinstance(job, Job):
        raise ValueError(f"run() takes a Job, got {type(job).__name__}")
    if isolation == "auto":
        mode = isolation_mode()
    elif isolation in (NAMESPACE, PROCESS):
        mode = isolation
    else:
        raise ValueError(f"job {job.name!r}: isolation must be auto, namespace or process, got {isolation!r}")
    if hide_paths and mode == PROCESS and not _WARNED.get("hide_paths"):
        _WARNED["hide_paths"] = True
        logger.warning("sandbox: hide_paths needs namespace mode; in process mode they stay readable")
    return _run(job, limits or Limits(), mode, tuple(hide_paths))


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_many(jobs: Iterable[Job], limits: Optional[Limits] = None, *, workers: Optional[int] = None,
             isolation: str = "auto", hide_paths: Sequence[str] = (),
             progress: Union[None, bool, Callable[[int, int], None]] = None,
             desc: str = "sandbox") -> List[SandboxResult]:
    """Run jobs concurrently (`workers` subprocesses at a time, default: every usable core), in input order.

    `progress`: a callable(done, total), or True for a tqdm bar.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    if isolation == "auto":
        isolation_mode()  # probe once, before the threads start
    workers = workers or default_workers()
    results: List[Optional[SandboxResult]] = [None] * len(jobs)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc=desc)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
            futures = {pool.submit(run, job, limits, isolation=isolation, hide_paths=hide_paths): index
                       for index, job in enumerate(jobs)}
            for done, future in enumerate(as_completed(futures), 1):
                results[futures[future]] = future.result()
                if bar is not None:
                    bar.update(1)
                elif callable(progress):
                    progress(done, len(jobs))
    finally:
        if bar is not None:
            bar.close()
    return results  # type: ignore[return-value]
