"""Inside the sandbox: the supervisor, the worker with its limits and isolation, and the test harness.

This file never runs in the caller's process: `gainrl.rewards.sandbox` passes its text to
`python -S -s -P -c` (the supervisor), which forks the worker that runs the harness. So it
uses the standard library only and imports nothing from gainrl. The caller-side module's
docstring describes the process layout, the isolation modes and the verdict protocol.
"""
import errno
import marshal
import os
import sys
import time


_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_MOVE = 1, 2, 4, 8, 32, 4096, 8192
_MS_FLAG_OF = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_SECCOMP, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 4, 22, 36, 38
_SECCOMP_MODE_FILTER = 2


def _child_main():
    """Supervisor: read the job, set up isolation, fork the worker, enforce the wall time, clean up."""
    started = time.monotonic()
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    msg = marshal.loads(b"".join(chunks))
    del chunks
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    token, result_fd = msg.pop("token"), msg["result_fd"]
    notes = []
    if msg["cgroup"]:  # join the run's pids cgroup before anything forks ("0": the writing process)
        try:
            with open(msg["cgroup"] + "/cgroup.procs", "w") as f:
                f.write("0")
        except OSError:
            notes.append("cgroup_join_failed")
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    namespace = msg["mode"] == "namespace"
    if namespace:
        notes += _ns_setup(libc, msg)
        os.chdir("/tmp")
    elif libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        notes.append("no_subreaper")
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # the worker may not read this process's memory via /proc
    me, caller = os.getpid(), os.getppid()
    worker = os.fork()
    if worker == 0:
        try:
            _worker_main(libc, msg, token, result_fd, me, caller)
        finally:
            os._exit(70)
    reason = _supervise(worker, msg, started, namespace)
    if reason or not namespace:
        _kill_group(worker)  # the worker is not reaped yet, so its process group id is still ours
    try:
        _, status, usage = os.wait4(worker, 0)
    except ChildProcessError:
        status = usage = None
    record = {"reason": reason or "-", "notes": ",".join(notes) or "-", "exit": "-", "signal": "-", "cpu_s": "-",
              "maxrss_kb": "-", "elapsed_s": "%.4f" % (time.monotonic() - started)}
    if status is not None:
        if os.WIFSIGNALED(status):
            record["signal"] = os.WTERMSIG(status)
        else:
            record["exit"] = os.WEXITSTATUS(status)
    if usage is not None:
        record["cpu_s"] = "%.4f" % (usage.ru_utime + usage.ru_stime)
        record["maxrss_kb"] = usage.ru_maxrss
    if not namespace:
        record["leftovers_killed"] = _kill_descendants(me)
    try:
        line = " ".join("%s=%s" % item for item in record.items())  # values hold no spaces
        os.write(result_fd, (token + " L " + line + "\n").encode())
    except OSError:
        pass
    os._exit(0)  # in namespace mode, pid 1 exiting kills everything left in the namespace


def _supervise(worker, msg, started, namespace):
    """Wait until the worker exits (left unreaped) or a limit hits ("wall_timeout", "process_limit").

    Orphans are ours (pid 1, or a subreaper): reap them meanwhile.
    """
    import select
    limits = msg["limits"]
    deadline = started + limits["wall_s"]
    guard = "ns" if namespace else ("tree" if os.geteuid() == 0 else None)  # root is exempt from NPROC
    interval = 0.01 if namespace else 0.05
    try:
        pidfd = os.pidfd_open(worker)
    except (AttributeError, OSError):
        pidfd = None
    while True:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is None:
                break
            if info.si_pid == worker:
                return ""
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                pass
        now = time.monotonic()
        if now >= deadline:
            return "wall_timeout"
        if guard == "ns" and sum(1 for name in os.listdir("/proc") if name.isdigit()) > limits["max_processes"] + 1:
            return "process_limit"
        if guard == "tree" and len(_descendants(os.getpid())) > limits["max_processes"]:
            return "process_limit"
        timeout = min(interval, deadline - now)
        if pidfd is not None:
            select.select([pidfd], [], [], timeout)
        else:
            time.sleep(min(timeout, 0.005))


def _proc_table():
    """{pid: (ppid, state)} for every visible process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/" + name + "/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        table[int(name)] = (int(fields[1]), fields[0][:1])
    return table


def _descendants(root):
    """Live (non-zombie) descendants of `root`."""
    table = _proc_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            stack.append(child)
            if table[child][1] != b"Z":
                found.append(child)
    return found


def _kill_group(pgid):
    """SIGKILL a whole process group at once (atomic with respect to fork, unlike a /proc walk)."""
    try:
        os.killpg(pgid, 9)
    except OSError:
        pass


def _kill_descendants(root):
    """SIGKILL every descendant until none is left (a subreaper inherits the orphans); reap them all."""
    killed = set()
    give_up = time.monotonic() + 10.0
    while time.monotonic() < give_up:
        alive = _descendants(root)
        for pid in alive:
            try:
                os.kill(pid, 9)  # SIGKILL (the signal module costs an enum import)
                killed.add(pid)
            except OSError:
                pass
        reaped_any = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = -1
            if pid <= 0:
                break
            reaped_any = True
        if not alive and pid == -1:
            break
        if not alive and not reaped_any:
            time.sleep(0.002)
    return len(killed)


def _unescape_mount_path(path):
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    parts = path.split("\\")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) >= 3 and all(c in "01234567" for c in part[:3]):
            out.append(chr(int(part[:3], 8)) + part[3:])
        else:
            out.append("\\" + part)
    return "".join(out)


def _mount(libc, source, target, fstype, flags, data):
    enc = (lambda s: None if s is None else s.encode())
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = __import__("ctypes").get_errno()
        raise OSError(err, "mount %s on %s: %s" % (source or fstype, target, os.strerror(err)))


def _ns_setup(libc, msg):
    """Namespace mode, as root of the new user namespace: read-only world, private /tmp and /dev, lock."""
    with open("/proc/self/mountinfo") as f:
        mountpoints = [_unescape_mount_path(line.split(" ")[4]) for line in f.read().splitlines() if line]
        f.seek(0)
        options = [line.split(" ")[5].split(",") for line in f.read().splitlines() if line]
    for target, opts in zip(mountpoints, options):
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        for opt in opts:
            flags |= _MS_FLAG_OF.get(opt, 0)
        try:
            _mount(libc, None, target, None, flags, None)
        except OSError:
            pass  # covered or vanished mount points; checked below
    limits = msg["limits"]
    _mount(libc, "tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "size=%d,mode=0700" % limits["disk_bytes"])
    # a minimal /dev: the harmless character devices bound from the host, shm, fd links
    stage = "/tmp/.sandbox-dev"
    os.mkdir(stage)
    _mount(libc, "tmpfs", stage, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=16m,mode=0755")
    for name in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists("/dev/" + name):
            open(stage + "/" + name, "w").close()
            _mount(libc, "/dev/" + name, stage + "/" + name, None, _MS_BIND, None)
    os.mkdir(stage + "/shm")
    os.chmod(stage + "/shm", 0o1777)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, stage + "/" + name)
    _mount(libc, stage, "/dev", None, _MS_MOVE, None)
    os.rmdir(stage)
    for path in msg["hide_paths"]:
        if os.path.isdir(path):
            _mount(libc, "tmpfs", path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=4k,mode=0555")
        elif os.path.exists(path):
            _mount(libc, "/dev/null", path, None, _MS_BIND, None)
            _mount(libc, None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, None)
    ours = {"/tmp", "/dev", "/dev/shm"}
    writable = []
    for target in dict.fromkeys(mountpoints):
        try:
            if target not in ours and not os.statvfs(target).f_flag & os.ST_RDONLY:
                writable.append(target)
        except OSError:
            pass
    if "/" in writable:
        raise OSError(errno.EPERM, "could not make / read-only")
    # a nested user+mount namespace locks every mount above: its root cannot remount or unmount them
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
        raise OSError(__import__("ctypes").get_errno(), "nested unshare failed")
    return ["writable:" + target for target in writable]


_SYSCALLS = {  # name: (x86_64, aarch64)
    "socket": (41, 198), "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "tkill": (200, 130), "kill": (62, 129), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "pidfd_open": (434, 434), "prlimit64": (302, 261)}


def _seccomp_program(machine, protected, pgids):
    """Classic-BPF seccomp program (list of (code, jt, jf, k)) or None for an unknown architecture.

    Denied (EPERM): socket(), io_uring, ptrace, process_vm_*, tkill, kill(-1, ..); and, for the
    `protected` pids (process mode: the supervisor and the caller), every way to signal them
    (kill of the pid or of its group in `pgids`, tgkill, rt_*sigqueueinfo,
    pidfd_open) and prlimit64 on any other process.
    """
    column = {"x86_64": 0, "aarch64": 1}.get(machine)
    if column is None:
        return None
    arch = (0xC000003E, 0xC00000B7)[column]
    nr = {name: numbers[column] for name, numbers in _SYSCALLS.items()}
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny, kill_process = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x80000000
    u32 = (lambda value: value & 0xFFFFFFFF)
    by_arg0 = {"kill": [u32(-1)]}  # syscall -> first-argument values that are denied
    if protected:
        by_arg0["kill"] += [u32(pid) for pid in protected] + [u32(-pgid) for pgid in pgids]
        for name in ("tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open"):
            by_arg0[name] = [u32(pid) for pid in protected]
    # instructions with symbolic jump targets ("deny"), resolved at the end
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, kill_process),  # a foreign syscall ABI: kill
            (ld, 0, 0, 0), (jge, "deny", 0, 0x40000000)]  # x32 ABI
    for name in ("socket", "ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup", "io_uring_enter",
                 "io_uring_register", "tkill"):
        prog.append((jeq, "deny", 0, nr[name]))
    for name, values in by_arg0.items():
        prog.append((jeq, 0, len(values) + 2, nr[name]))
        prog.append((ld, 0, 0, 16))  # low 32 bits of the first argument (little endian)
        prog += [(jeq, "deny", 0, value) for value in values]
        prog.append((ret, 0, 0, allow))
    if protected:  # prlimit64 only on itself (pid 0)
        prog += [(jeq, 0, 3, nr["prlimit64"]), (ld, 0, 0, 16), (jeq, 0, "deny", 0), (ret, 0, 0, allow)]
    prog.append((ret, 0, 0, allow))
    deny_at = len(prog)
    prog.append((ret, 0, 0, deny))
    return [(code, deny_at - i - 1 if jt == "deny" else jt, deny_at - i - 1 if jf == "deny" else jf, k)
            for i, (code, jt, jf, k) in enumerate(prog)]


def _install_seccomp(libc, protected=(), pgids=()):
    """Install `_seccomp_program` for this process and all its descendants; False if the kernel refuses."""
    import ctypes
    prog = _seccomp_program(os.uname().machine, protected, pgids)
    if prog is None:
        return False

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    array = (SockFilter * len(prog))(*[SockFilter(*insn) for insn in prog])
    fprog = SockFprog(len(prog), array)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0


def _block_python_sockets():
    """Fallback without seccomp: make socket creation fail inside this interpreter."""
    import _socket

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "network access is disabled in the sandbox")

    class NoSocket(_socket.socket):
        __slots__ = ()

        def __init__(self, *args, **kwargs):
            denied()

    _socket.socket = _socket.SocketType = NoSocket
    if hasattr(_socket, "socketpair"):
        _socket.socketpair = denied


def _worker_main(libc, msg, token, result_fd, supervisor, caller):
    """The worker: limits, network barrier, then the harness (never returns)."""
    import resource
    libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)  # SIGKILL when the supervisor dies
    if os.getppid() != supervisor:
        os._exit(71)
    limits = msg["limits"]

    def cap(which, value):
        soft, hard = resource.getrlimit(which)
        value = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)
        resource.setrlimit(which, (value, value))

    cap(resource.RLIMIT_AS, limits["memory_bytes"])
    cap(resource.RLIMIT_FSIZE, limits["max_file_bytes"])
    cap(resource.RLIMIT_NOFILE, limits["max_open_files"])
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NPROC, msg["nproc"])
    cpu = max(1, int(-(-limits["cpu_s"] // 1)))
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or hard > cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if os.geteuid() == 0:
        os.nice(19)  # root ignores RLIMIT_NPROC: a fork bomb must not starve the supervisor's process-count guard
    os.setpgid(0, 0)  # its own process group: one killpg() stops a fork bomb, and kill(0) stays inside it
    if msg["mode"] == "namespace":
        protected = pgids = ()  # the caller is invisible and pid 1 immune
    else:  # the supervisor and the caller must not be signalled
        protected = (supervisor, caller) if caller > 1 else (supervisor,)
        pgids = set()
        for pid in protected:
            try:
                pgids.add(os.getpgid(pid))
            except OSError:
                pass
    seccomp = _install_seccomp(libc, protected, pgids)
    if not seccomp:
        _block_python_sockets()
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    os.write(result_fd, (token + " I " + ("1" if seccomp else "0") + " " + str(os.getpid()) + "\n").encode())
    sys.argv = ["solution"]
    _harness(msg["job"], token, result_fd)


def _imported_modules(source):
    """Modules named by top-level `import x` / `from x import y` lines (a cheap scan, no re)."""
    names = []
    for line in source.splitlines():
        if line.startswith("import "):
            names += [part.strip().split(" ")[0] for part in line[7:].split(",")]
        elif line.startswith("from ") and " import " in line:
            names.append(line[5:].split(" import ")[0].strip())
    return [name for name in names if name and not name.startswith(".")]


def _plain_data_guard(entry):
    """(guard, violations): guard(fn) wraps the solution's entry point so that what it returns must be plain
    data, built only from these exact types (taken now, before the solution can replace a module), or the
    call raises a BaseException (which a test's `except Exception` does not swallow) and appends its
    message to `violations`. An object that compares equal to anything, a str or int subclass with its
    own __eq__, a generator: each fails the check that receives it, whatever the test does with it."""
    import collections
    import datetime
    import decimal
    import fractions
    import re
    sequences = {list, tuple, set, frozenset, collections.deque}
    mappings = {dict, collections.OrderedDict, collections.Counter, collections.defaultdict}
    plain = {int, float, complex, bool, str, bytes, bytearray, type(None), range, type(Ellipsis), decimal.Decimal,
             fractions.Fraction, datetime.date, datetime.datetime, datetime.time, datetime.timedelta,
             re.Match,  # always true, equal only to itself: MBPP's regex tasks return one and assert it
             *sequences, *mappings}
    # by identity: a set lookup of the type itself would call a metaclass's __hash__ and __eq__ (the solution's)
    plain_ids, sequence_ids, mapping_ids = ({id(t) for t in kinds} for kinds in (plain, sequences, mappings))
    _type, _id, _set, _dict_keys, _dict_values = type, id, set, dict.keys, dict.values
    type_name = type.__dict__["__name__"].__get__  # no attribute lookup the solution's metaclass could hook
    violations = []

    class NotPlainData(BaseException):
        pass

    def first_not_plain(value):
        stack, seen = [value], _set()
        while stack:
            item = stack.pop()
            kind = _type(item)
            if _id(kind) not in plain_ids:
                try:
                    return type_name(kind)
                except BaseException:
                    return "an object of a type defined by the solution"
            if _id(kind) in mapping_ids or _id(kind) in sequence_ids:
                if _id(item) in seen:
                    continue
                seen.add(_id(item))
                if _id(kind) in mapping_ids:
                    stack.extend(_dict_keys(item))
                    stack.extend(_dict_values(item))
                else:
                    stack.extend(item)
        return None

    def guard(fn):
        def entry_point(*args, **kwargs):
            result = fn(*args, **kwargs)
            bad = first_not_plain(result)
            if bad is not None:
                message = (entry + " returned " + bad + ", not plain data (exact builtin values only): no test "
                           "compares it")
                violations.append(message)
                raise NotPlainData(message)
            return result
        return entry_point
    return guard, violations


def _harness(job, token, result_fd):
    """Run the solution, then the tests in a namespace the solution cannot tamper with; report; exit."""
    import builtins
    # Everything used after the solution has run is bound to locals first.
    _write, _getpid, _exit, _str, _type, _isinstance = os.write, os.getpid, os._exit, str, type, isinstance
    _BaseException, _SystemExit, _MemoryError, _AssertionError = BaseException, SystemExit, MemoryError, AssertionError
    _compile, _exec, _dict, _len, _settrace, _setprofile = compile, exec, dict, len, sys.settrace, sys.setprofile
    _modules, _sys, _stdout, _stderr = sys.modules, sys, sys.stdout, sys.stderr
    my_pid = _getpid()
    builtins_dict = builtins.__dict__
    builtins_snapshot = _dict(builtins_dict)

    def emit(*fields):
        if _getpid() != my_pid:  # a forked child never reports
            return
        line = token
        for field in fields:
            line = line + " " + _str(field)
        try:
            _write(result_fd, (line + "\n").encode("utf-8", "replace"))
        except _BaseException:
            pass

    def describe(exc):
        try:
            text = _type(exc).__name__ + ": " + _str(exc)
        except _BaseException:
            text = "unprintable exception"
        return text[:2000].encode("utf-8", "replace").hex() or "-"

    def finish(status, reason, passed, total, detail="-"):
        emit("R", status, reason or "-", passed, total, detail)
        _exit(0)

    # 1. trusted tests: parse and compile before any untrusted code runs
    try:
        checks = [(True, _compile(job["tests"], "<tests>", "exec", dont_inherit=True))]
        if job["split_tests"]:
            import ast
            tree = ast.parse(job["tests"], "<tests>")
            if any(_isinstance(node, ast.Assert) for node in tree.body):
                checks = [(_isinstance(node, ast.Assert),
                           _compile(ast.Module(body=[node], type_ignores=[]), "<tests>", "exec", dont_inherit=True))
                          for node in tree.body]
        for name in _imported_modules(job["tests"]):
            try:  # import the tests' modules now, so the solution cannot plant fakes in sys.modules
                __import__(name)
            except _BaseException:
                pass
    except _BaseException as exc:
        finish("error", "bad_tests", 0, 0, describe(exc))
    total = sum(1 for is_check, _ in checks if is_check)
    trusted_globals = {"__name__": "trusted"}  # the prompt's own helpers, defined before the solution runs
    if job["trusted"]:
        try:
            _exec(_compile(job["trusted"], "<trusted>", "exec", dont_inherit=True), trusted_globals)
        except _BaseException as exc:
            finish("error", "bad_tests", 0, 0, describe(exc))
    guard, not_plain = _plain_data_guard(job["entry_point"])  # built from types taken before the solution runs
    modules_before = _dict(_modules)

    # 2. the untrusted solution, as module "solution" (so `if __name__ == "__main__":` blocks stay inert)
    try:
        code = _compile(job["solution"], "<solution>", "exec", dont_inherit=True)
    except _BaseException as exc:
        finish("failed", "syntax_error", 0, total, describe(exc))
    module = _type(_sys)("solution")
    module.__dict__["__builtins__"] = builtins
    _modules["solution"] = module
    solution_globals = module.__dict__
    try:
        _exec(code, solution_globals)
    except _BaseException as exc:
        reason = ("system_exit" if _isinstance(exc, _SystemExit) else "memory" if _isinstance(exc, _MemoryError)
                  else "file_size_limit" if _isinstance(exc, OSError) and exc.errno == errno.EFBIG
                  else "solution_error")
        detail = describe(exc)
        del exc
        if reason == "memory":
            solution_globals.clear()
        finish("failed", reason, 0, total, detail)
    if _getpid() != my_pid:
        _exit(0)

    # 3. undo what the solution may have changed around the tests
    _settrace(None)
    _setprofile(None)
    builtins_dict.clear()
    builtins_dict.update(builtins_snapshot)
    for name, mod in modules_before.items():
        if _modules.get(name) is not mod:
            _modules[name] = mod
    _sys.stdout, _sys.stderr = _stdout, _stderr
    entry = job["entry_point"]
    test_globals = {}
    try:
        for name, value in _dict(solution_globals).items():
            if name not in builtins_snapshot or name == entry:
                test_globals[name] = value
    except _BaseException as exc:
        finish("failed", "solution_error", 0, total, describe(exc))
    for name, value in _dict(trusted_globals).items():
        if name != entry and not name.startswith("__"):
            test_globals[name] = value
    test_globals["__builtins__"] = _dict(builtins_snapshot)
    test_globals["__name__"] = "tests"
    if entry in test_globals:  # what it returns must be plain data before any test compares it
        test_globals[entry] = guard(test_globals[entry])

    # 4. the tests
    passed = done = 0
    first_failure = None
    for is_check, code in checks:
        caught = _len(not_plain)
        try:
            _exec(code, test_globals)
            ok, reason = True, ""
        except _BaseException as exc:
            ok = False
            reason = ("assertion" if _isinstance(exc, _AssertionError) else "system_exit"
                      if _isinstance(exc, _SystemExit) else "memory" if _isinstance(exc, _MemoryError)
                      else "exception")
            if first_failure is None:
                first_failure = (reason, describe(exc))
            del exc
        if _len(not_plain) > caught:  # even where the test caught the guard's exception
            ok = False
            if first_failure is None or first_failure[0] != "not_plain_data":
                first_failure = ("not_plain_data", ("NotPlainData: " + not_plain[caught]).encode("utf-8", "replace").hex())
        if _getpid() != my_pid:
            _exit(0)
        if is_check:
            done += 1
            passed += 1 if ok else 0
            if _len(checks) > 1:
                emit("P", passed, done, total)
        elif not ok:
            break  # a failed setup statement fails the checks after it
    if passed == total and first_failure is None:
        finish("passed", "", passed, total)
    finish("failed", first_failure[0], passed, total, first_failure[1])
