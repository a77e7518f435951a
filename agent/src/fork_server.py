# The agent's warm Python (see warm.rs): imports what agents use once, then forks one child per
# run. Single-threaded, so forking is safe. Never runs a run's code itself: each child starts
# from this pristine state, and nothing a run does reaches the next.
#
# fd 3 is the control socket: the agent sends one byte per run with three descriptors (the
# run's socket, its stdout and stderr pipes). On the run's socket this server writes the
# child's pid, then, once it has exited, its raw wait status, each as a decimal line; it reaps
# the child only when the agent closes that socket, so the pid stays the child's meanwhile. The
# child reads its request from the same socket: a 4-byte big-endian length, then JSON
# {"source", "cwd", "env"}; an empty read (the agent gave up) ends it without running anything.
import os
import selectors
import socket
import sys


def preload():
    """Imports what agents' programs use. A module whose import opened an X connection (PyAutoGUI
    and MouseInfo connect at import) gets it closed here and replaced by one each child opens
    on first use, with the DISPLAY its run has."""
    import importlib

    for name in ("pyautogui", "PIL.Image", "Xlib.display", "json", "subprocess", "ctypes"):
        try:
            importlib.import_module(name)
        except Exception:  # absent, or no display yet: its runs import it themselves
            pass
    display_type = getattr(sys.modules.get("Xlib.display"), "Display", None)
    if display_type is None:
        return
    for module in list(sys.modules.values()):
        for attr, value in list(getattr(module, "__dict__", {}).items()):
            if isinstance(value, display_type):
                value.close()
                setattr(module, attr, LazyDisplay(module, attr, display_type))


class LazyDisplay:
    """Stands for a module's X connection until first used in a child, then connects and puts
    the real one in its place."""

    def __init__(self, module, attr, display_type):
        self._where = (module, attr, display_type)

    def __getattr__(self, name):
        module, attr, display_type = self._where
        display = display_type(os.environ["DISPLAY"])
        setattr(module, attr, display)
        return getattr(display, name)


def name_server():
    """`orgo-python` in ps and /proc/PID/comm, so the server is told apart from runs."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(15, b"orgo-python", 0, 0, 0)  # PR_SET_NAME


def serve(control):
    """Forks a child per request; answers (in the child only) the child's descriptors."""
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, None)
    control.sendall(b"r")  # ready
    while True:
        for key, _ in selector.select():
            if key.data is None:
                message, fds, _, _ = socket.recv_fds(control, 1, 3)
                if not message:
                    sys.exit(0)  # the agent is gone
                if len(fds) != 3:
                    for fd in fds:
                        os.close(fd)
                    continue
                run, out, err = fds
                pid = os.fork()
                if pid == 0:
                    # Nothing of the server stays open in the run: the control socket, other
                    # runs' sockets and pidfds, the selector.
                    for other in list(selector.get_map().values()):
                        if isinstance(other.fileobj, socket.socket):
                            other.fileobj.close()
                        else:
                            os.close(other.fd)
                    selector.close()
                    return run, out, err
                os.close(out)
                os.close(err)
                run = socket.socket(fileno=run)
                pidfd = os.pidfd_open(pid)
                selector.register(pidfd, selectors.EVENT_READ, ("exited", pid, run))
                try:
                    run.sendall(b"%d\n" % pid)
                except OSError:
                    pass  # the agent gave up: the child reads no request and ends
            elif key.data[0] == "exited":
                _, pid, run = key.data
                selector.unregister(key.fd)
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                if info.si_code == os.CLD_EXITED:
                    status = (info.si_status & 0xFF) << 8
                else:
                    status = info.si_status | (0x80 if info.si_code == os.CLD_DUMPED else 0)
                try:
                    run.sendall(b"%d\n" % status)
                except OSError:
                    pass
                selector.register(run, selectors.EVENT_READ, ("done", pid, key.fd))
            else:
                _, pid, pidfd = key.data
                selector.unregister(key.fd)
                os.waitpid(pid, 0)
                os.close(pidfd)
                key.fileobj.close()


def read_request(run):
    import json

    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = os.read(run, n - len(data))
            if not chunk:
                os._exit(0)  # the agent gave up on this run: nothing runs
            data += chunk
        return data

    return json.loads(exactly(int.from_bytes(exactly(4), "big")))


def become_run(run, out, err):
    """Turns the forked child into what `python3 -c SOURCE` would be: its own process group, a
    subreaper for what it starts, stdin /dev/null, the run's pipes, cwd and environment, a
    fresh __main__."""
    import builtins
    import ctypes
    import importlib
    import types

    os.setpgid(0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    libc.prctl(15, b"python3", 0, 0, 0)  # PR_SET_NAME: named as a cold run is
    request = read_request(run)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 1024)
    os.chdir(request["cwd"])
    os.environ.update(request["env"])
    import time

    time.tzset()  # a run's TZ, as a fresh interpreter reads it
    sys.argv = ["-c"]
    sys.path[0] = ""
    importlib.invalidate_caches()
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    main.__annotations__ = {}
    main.__loader__ = sys.modules["__main__"].__loader__
    sys.modules["__main__"] = main
    return request["source"], main


def run_source(source, main):
    """Runs the source as `python3 -c` does: `SystemExit` ends it with its code (a message
    printed, 1); any other uncaught exception prints its traceback (without this frame) and
    exits 1."""
    try:
        exec(compile(source, "<string>", "exec"), main.__dict__)
    except SystemExit as e:
        code = e.code
        if code is None:
            finish(0)
        if isinstance(code, int):
            finish(code if -(2**31) <= code < 2**31 else -1)
        print(code, file=sys.stderr)
        finish(1)
    except BaseException as e:  # noqa: B036 - what -c reports, it reports for every exception
        # The program's frames only: a SyntaxError has none, the rest start below this one.
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        e.__traceback__ = None if isinstance(e, SyntaxError) else tb
        sys.excepthook(type(e), e, e.__traceback__)
        if isinstance(e, KeyboardInterrupt):
            import signal

            shut_down()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        finish(1)
    finish(0)


def shut_down():
    """What the interpreter's shutdown does that a program can see — its non-daemon threads
    waited for, its atexit callbacks run, its own objects let go (files it left open are flushed
    and closed, `__del__` runs; the young garbage collected), its output flushed — without
    tearing down every preloaded module one by one (most of a forked run's time)."""
    if "threading" in sys.modules:
        sys.modules["threading"]._shutdown()
    import atexit
    import gc

    atexit._run_exitfuncs()
    sys.modules["__main__"].__dict__.clear()
    gc.collect(1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def finish(status):
    """Ends the run with `status` once it is shut down."""
    shut_down()
    os._exit(status & 0xFF)


name_server()
preload()
run_source(*become_run(*serve(socket.socket(fileno=3))))
