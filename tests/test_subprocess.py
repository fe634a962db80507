"""Tests of subprocess_exec / subprocess_shell, the subprocess transport and asyncio.subprocess.

Each `any_loop` test runs on oxloop and on the stock loop: the assertions are stock
behaviour. Tests on the `loop` fixture cover what is oxloop's own (no child watcher: pidfds
or a waitpid thread; children reaped on loop close), with the stock difference noted.
"""

import asyncio
import hashlib
import logging
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import pytest
from support import LIVENESS, open_fds, run

import oxloop

PY = sys.executable
PY311 = sys.version_info >= (3, 11)
MB = 1 << 20


def py(code):
    return [PY, "-c", code]


class RecordingProtocol(asyncio.SubprocessProtocol):
    """Records every callback in order; `done` resolves at connection_lost."""

    def __init__(self, loop):
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.exited = loop.create_future()
        self.done = loop.create_future()
        self.returncode_at_lost = "unset"

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("connection_made")

    def pipe_data_received(self, fd, data):
        if not self.events or self.events[-1] != ("data", fd):
            self.events.append(("data", fd))
        self.data[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe_lost", fd))

    def process_exited(self):
        self.events.append("process_exited")
        self.exited.set_result(self.transport.get_returncode())

    def connection_lost(self, exc):
        self.events.append("connection_lost")
        self.returncode_at_lost = self.transport.get_returncode()
        self.done.set_result(exc)


def _data(size, seed):
    return random.Random(seed).randbytes(size)


# ------------------------------------------------------------------ bulk data


@pytest.mark.timeout(180)
def test_100mb_through_cat_both_ways_every_byte_checked(any_loop):
    size = 100 * MB
    payload = _data(size, 4)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

        async def feed():
            view = memoryview(payload)
            for off in range(0, size, MB):
                proc.stdin.write(view[off : off + MB])
                await proc.stdin.drain()
            proc.stdin.close()

        async def check():
            got = 0
            while True:
                chunk = await proc.stdout.read(4 * MB)
                if not chunk:
                    return got
                assert chunk == payload[got : got + len(chunk)], f"mismatch after {got} bytes"
                got += len(chunk)

        _, got = await asyncio.gather(feed(), check())
        assert got == size
        assert await proc.wait() == 0

    run(any_loop, main(), timeout=150)


@pytest.mark.timeout(180)
def test_100mb_each_direction_checked_by_the_child(any_loop):
    size = 100 * MB
    payload = _data(size, 7)
    digest = hashlib.sha256(payload).hexdigest()
    # The child produces the same bytes the parent expects (same generator and seed).
    produce = f"import random, sys; sys.stdout.buffer.write(random.Random(7).randbytes({size}))"
    consume = "import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"

    async def main():
        # child -> parent
        proc = await asyncio.create_subprocess_exec(*py(produce), stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        assert len(out) == size
        assert out == payload
        del out
        # parent -> child, checked by the child's hash
        proc = await asyncio.create_subprocess_exec(
            *py(consume), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        out, _ = await proc.communicate(payload)
        assert proc.returncode == 0
        assert out.decode().strip() == digest

    run(any_loop, main(), timeout=150)


# --------------------------------------------------------------- many children


@pytest.mark.timeout(120)
def test_200_concurrent_children(any_loop):
    async def one(i):
        proc = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            f'read line; echo "$line {i}"; echo err{i} >&2; exit {i % 50}',
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate(f"hello{i}\n".encode())
        return proc.pid, proc.returncode, out, err

    async def main():
        return await asyncio.gather(*(one(i) for i in range(200)))

    results = run(any_loop, main(), timeout=100)
    assert len({pid for pid, *_ in results}) == 200
    for i, (_, code, out, err) in enumerate(results):
        assert code == i % 50
        assert out == f"hello{i} {i}\n".encode()
        assert err == f"err{i}\n".encode()


# -------------------------------------------------------------------- signals


@pytest.mark.parametrize(
    "how, expected",
    [
        ("kill", -signal.SIGKILL),
        ("terminate", -signal.SIGTERM),
        ("send_signal", -signal.SIGUSR1),
        ("self", -signal.SIGSEGV),
    ],
)
def test_children_killed_by_signals_have_negative_returncodes(any_loop, how, expected):
    async def main():
        if how == "self":
            proc = await asyncio.create_subprocess_exec("sh", "-c", "kill -SEGV $$")
        else:
            code = "import sys, time; print('ready', flush=True); time.sleep(3600)"
            proc = await asyncio.create_subprocess_exec(
                *py(code), stdout=subprocess.PIPE, restore_signals=True
            )
            assert await proc.stdout.readline() == b"ready\n"
            if how == "send_signal":
                proc.send_signal(signal.SIGUSR1)
            else:
                getattr(proc, how)()
        return await proc.wait()

    assert run(any_loop, main()) == expected


def test_signal_after_exit_is_a_no_op_and_after_close_raises(any_loop):
    class Proto(RecordingProtocol):
        def process_exited(self):
            # Reaped: nothing to signal (the pid may be reused already), and no error.
            self.transport.send_signal(signal.SIGTERM)
            self.transport.kill()
            self.transport.terminate()
            super().process_exited()

    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: Proto(any_loop), "true", stdin=None
        )
        assert await proto.exited == 0
        await proto.done
        with pytest.raises(ProcessLookupError):
            transport.kill()
        with pytest.raises(ProcessLookupError):
            transport.send_signal(signal.SIGTERM)
        transport.close()

    run(any_loop, main())


# --------------------------------------------------------------- pipe closing


def test_child_closes_stdout_early(any_loop):
    # The child closes its stdout, then blocks reading stdin: the stdout pipe is lost while
    # the process still runs; the exit and connection_lost only come after stdin closes.
    code = "import os, sys; print('bye', flush=True); os.close(1); sys.stdin.read(); sys.exit(3)"

    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: RecordingProtocol(any_loop), *py(code), stderr=None
        )
        lost = any_loop.create_future()
        orig = proto.pipe_connection_lost

        def pipe_connection_lost(fd, exc):
            orig(fd, exc)
            if fd == 1:
                lost.set_result(transport.get_returncode())

        proto.pipe_connection_lost = pipe_connection_lost
        assert await lost is None
        assert bytes(proto.data[1]) == b"bye\n"
        assert not proto.done.done()
        transport.get_pipe_transport(0).close()
        assert await proto.exited == 3
        await proto.done
        transport.close()
        return proto.events

    events = run(any_loop, main())
    assert events == [
        "connection_made",
        ("data", 1),
        ("pipe_lost", 1),
        ("pipe_lost", 0),
        "process_exited",
        "connection_lost",
    ]


def test_child_closes_stdin_early_write_fails(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import os, sys; os.close(0); print('closed', flush=True); sys.stdout.close()"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert await proc.stdout.readline() == b"closed\n"
        assert await proc.wait() == 0
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(64):
                proc.stdin.write(b"x" * 65536)
                await proc.stdin.drain()

    with _quiet_asyncio_logger():
        run(any_loop, main())


# ---------------------------------------------------------- callback ordering


def test_process_exited_ordering_with_output(any_loop):
    code = "import sys; sys.stdout.write('out'); sys.stderr.write('err')"

    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: RecordingProtocol(any_loop), *py(code), stdin=None
        )
        await proto.done
        assert proto.returncode_at_lost == 0
        transport.close()
        return proto

    proto = run(any_loop, main())
    events = proto.events
    assert events[0] == "connection_made"
    assert events[-1] == "connection_lost"
    # process_exited and connection_lost come after every pipe is closed... at least
    # connection_lost does; process_exited may come before or between them (stock).
    assert events.index(("pipe_lost", 1)) < events.index("connection_lost")
    assert events.index(("pipe_lost", 2)) < events.index("connection_lost")
    assert events.index("process_exited") < events.index("connection_lost")
    for fd in (1, 2):
        assert events.index(("data", fd)) < events.index(("pipe_lost", fd))
    assert bytes(proto.data[1]) == b"out"
    assert bytes(proto.data[2]) == b"err"


def test_connection_lost_waits_for_a_grandchild_holding_stdout(any_loop):
    # The shell exits at once; a background job keeps stdout open until the test lets it go.
    r, w = os.pipe()

    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: RecordingProtocol(any_loop),
            *py(
                "import subprocess, sys;"
                f"grandchild = 'import os; os.read({r}, 1); print(\\'late\\')';"
                f"subprocess.Popen([sys.executable, '-c', grandchild], pass_fds=({r},));"
                "sys.exit(5)"
            ),
            stdin=None,
            stderr=None,
            pass_fds=(r,),
        )
        wait = asyncio.ensure_future(transport._wait())
        assert await proto.exited == 5
        assert "connection_lost" not in proto.events
        await asyncio.sleep(0)
        # 3.10 and 3.14+ wake wait() at the exit; 3.11-3.13 only at connection_lost.
        assert wait.done() is (not PY311 or sys.version_info >= (3, 14))
        os.write(w, b"go\n")
        await proto.done
        assert await wait == 5
        transport.close()
        return proto

    try:
        proto = run(any_loop, main())
    finally:
        os.close(r)
        os.close(w)
    assert bytes(proto.data[1]) == b"late\n"
    assert proto.events.index("process_exited") < proto.events.index(("pipe_lost", 1))
    assert proto.events[-1] == "connection_lost"


# ------------------------------------------------------------- Popen arguments


def test_stderr_to_stdout(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: RecordingProtocol(any_loop),
            "sh",
            "-c",
            "echo one; echo two >&2; echo three",
            stdin=None,
            stderr=subprocess.STDOUT,
        )
        assert transport.get_pipe_transport(1) is not None
        assert transport.get_pipe_transport(2) is None
        await proto.done
        transport.close()
        return proto

    proto = run(any_loop, main())
    assert bytes(proto.data[1]) == b"one\ntwo\nthree\n"
    assert not proto.data[2]


def test_devnull(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            "cat; echo to-null; echo err >&2",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is None and proc.stdout is None
        out, err = await proc.communicate()
        return out, err, proc.returncode

    assert run(any_loop, main()) == (None, b"err\n", 0)


def test_fd_and_file_arguments(any_loop, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"from a file\n")
    dst = tmp_path / "out.txt"

    async def main():
        out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            with open(src, "rb") as fin:
                transport, proto = await any_loop.subprocess_exec(
                    lambda: RecordingProtocol(any_loop), "cat", stdin=fin, stdout=out_fd
                )
                assert transport.get_pipe_transport(0) is None
                assert transport.get_pipe_transport(1) is None
                assert transport.get_pipe_transport(2) is not None
                await proto.done
                transport.close()
        finally:
            os.close(out_fd)
        return proto.returncode_at_lost

    assert run(any_loop, main()) == 0
    assert dst.read_bytes() == b"from a file\n"


def test_cwd_and_env(any_loop, tmp_path):
    async def main():
        proc = await asyncio.create_subprocess_shell(
            'pwd; echo "$OXLOOP_TEST_VAR"; echo "${HOME-unset}"',
            stdout=subprocess.PIPE,
            cwd=tmp_path,
            env={"OXLOOP_TEST_VAR": "hello env", "PATH": os.environ.get("PATH", "/bin")},
        )
        out, _ = await proc.communicate()
        return out.decode().splitlines()

    lines = run(any_loop, main())
    assert os.path.realpath(lines[0]) == os.path.realpath(tmp_path)
    assert lines[1:] == ["hello env", "unset"]


def test_pass_fds(any_loop):
    r, w = os.pipe()
    other_r, other_w = os.pipe()

    async def main():
        code = (
            f"import os; os.write({w}, b'through fd {w}');"
            f"print(os.path.exists('/proc/self/fd/{other_w}'))"
        )
        proc = await asyncio.create_subprocess_exec(
            *py(code), stdout=subprocess.PIPE, pass_fds=(w,)
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out

    try:
        out = run(any_loop, main())
        assert os.read(r, 100) == f"through fd {w}".encode()
        assert out == b"False\n"  # fds not passed are closed in the child
    finally:
        for fd in (r, w, other_r, other_w):
            os.close(fd)


def test_start_new_session_and_process_group(any_loop):
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"

    async def main():
        results = []
        kwargs = [{"start_new_session": True}]
        if PY311:
            kwargs.append({"process_group": 0})
        for kw in kwargs:
            proc = await asyncio.create_subprocess_exec(*py(code), stdout=subprocess.PIPE, **kw)
            out, _ = await proc.communicate()
            results.append(out)
        return results

    results = run(any_loop, main())
    assert results[0] == b"True True\n"
    if PY311:
        assert results[1] == b"False True\n"


def test_umask_and_pipesize(any_loop):
    code = "import os, fcntl; print(oct(os.umask(0)), fcntl.fcntl(1, 1032))"  # F_GETPIPE_SZ

    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py(code), stdout=subprocess.PIPE, umask=0o027, pipesize=1 << 17
        )
        out, _ = await proc.communicate()
        return out

    assert run(any_loop, main()) == f"0o27 {1 << 17}\n".encode()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user and groups needs root")
def test_user_group_extra_groups(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            "id -u; id -g; id -G",
            stdout=subprocess.PIPE,
            cwd="/",
            user=65534,
            group=65534,
            extra_groups=[65533],
        )
        out, _ = await proc.communicate()
        return out.decode().split("\n")

    uid, gid, groups, _ = run(any_loop, main())
    assert (uid, gid, sorted(groups.split())) == ("65534", "65534", ["65533", "65534"])


def test_shell_command_as_bytes(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_shell(b"echo bytes; exit 4", stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    assert run(any_loop, main()) == (b"bytes\n", 4)


# ---------------------------------------------------------- argument checks

_BAD_EXEC = [
    ({"universal_newlines": True}, "universal_newlines must be False"),
    ({"shell": True}, "shell must be False"),
    ({"bufsize": 1}, "bufsize must be 0"),
    ({"text": True}, "text must be False"),
    ({"encoding": "utf-8"}, "encoding must be None"),
    ({"errors": "strict"}, "errors must be None"),
]
_BAD_SHELL = [
    ({"universal_newlines": True}, "universal_newlines must be False"),
    ({"shell": False}, "shell must be True"),
    ({"bufsize": -1}, "bufsize must be 0"),
    ({"text": True}, "text must be False"),
    ({"encoding": "utf-8"}, "encoding must be None"),
    ({"errors": "strict"}, "errors must be None"),
]


@pytest.mark.parametrize("kwargs, message", _BAD_EXEC)
def test_subprocess_exec_argument_checks(any_loop, kwargs, message):
    made = []

    def factory():
        made.append(1)
        return asyncio.SubprocessProtocol()

    with pytest.raises(ValueError, match=f"^{message}$"):
        run(any_loop, any_loop.subprocess_exec(factory, "true", **kwargs))
    assert not made  # checked before the protocol is made


@pytest.mark.parametrize("kwargs, message", _BAD_SHELL)
def test_subprocess_shell_argument_checks(any_loop, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        run(any_loop, any_loop.subprocess_shell(asyncio.SubprocessProtocol, "true", **kwargs))


@pytest.mark.parametrize("cmd", [["echo", "hi"], None, 42])
def test_subprocess_shell_cmd_must_be_a_string(any_loop, cmd):
    with pytest.raises(ValueError, match="^cmd must be a string$"):
        run(any_loop, any_loop.subprocess_shell(asyncio.SubprocessProtocol, cmd))


@pytest.mark.parametrize("kw", [{"text": True}, {"encoding": "utf-8"}, {"errors": "strict"}])
def test_create_subprocess_text_mode_fails(any_loop, kw):
    async def main():
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_exec(PY, "-c", "pass", **kw)
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_shell("true", **kw)

    run(any_loop, main())


def test_unknown_popen_argument_is_popen_typeerror(any_loop):
    async def main():
        with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
            await any_loop.subprocess_exec(asyncio.SubprocessProtocol, "true", bogus=1)

    fds = open_fds()
    run(any_loop, main())
    assert open_fds() == fds


def test_missing_program_raises_without_leaks(any_loop):
    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(
                "/nonexistent/oxloop-no-such-program",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )

    fds = open_fds()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        run(any_loop, main())
    assert open_fds() == fds


# ----------------------------------------------------------- the transport API


def test_transport_api(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: RecordingProtocol(any_loop), "cat"
        )
        assert isinstance(transport, asyncio.SubprocessTransport)
        popen = transport.get_extra_info("subprocess")
        assert isinstance(popen, subprocess.Popen)
        assert transport.get_pid() == popen.pid
        assert transport.get_returncode() is None
        assert transport.get_protocol() is proto
        assert f"pid={popen.pid}" in repr(transport) and "running" in repr(transport)
        assert isinstance(transport.get_pipe_transport(0), asyncio.WriteTransport)
        assert isinstance(transport.get_pipe_transport(1), asyncio.ReadTransport)
        assert isinstance(transport.get_pipe_transport(2), asyncio.ReadTransport)
        assert transport.get_pipe_transport(3) is None
        assert not transport.is_closing()
        transport.get_pipe_transport(0).write(b"abc")
        transport.get_pipe_transport(0).write_eof()
        assert await proto.exited == 0
        await proto.done
        assert popen.returncode == 0
        assert transport.get_returncode() == 0
        assert "returncode=0" in repr(transport)
        transport.close()
        assert transport.is_closing()
        transport.close()  # idempotent
        return bytes(proto.data[1])

    fds = open_fds()
    assert run(any_loop, main()) == b"abc"
    assert open_fds() == fds  # pipes and pidfd all closed


def test_close_kills_a_running_child(any_loop):
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: RecordingProtocol(any_loop), "sleep", "3600"
        )
        transport.close()
        await proto.done
        return proto.returncode_at_lost, transport.get_returncode()

    assert run(any_loop, main()) == (-signal.SIGKILL, -signal.SIGKILL)


def test_cancelled_creation_kills_and_reaps(any_loop, monkeypatch):
    started = []

    class RecordingPopen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)

    async def main():
        task = asyncio.ensure_future(
            any_loop.subprocess_exec(asyncio.SubprocessProtocol, "sleep", "3600")
        )
        while not started:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with _quiet_asyncio_logger():
        run(any_loop, main())
    (popen,) = started
    # Creation only gives up once the child is killed and its status collected.
    assert popen.returncode == -signal.SIGKILL
    assert _state(popen.pid) is None


def test_user_reaps_the_child_first(any_loop, caplog):
    # Stock semantics: the status is gone, the transport reports 255 with a warning.
    async def main():
        transport, proto = await any_loop.subprocess_exec(
            lambda: RecordingProtocol(any_loop), "sh", "-c", "exit 9", stdin=None
        )
        try:
            _, status = os.waitpid(transport.get_pid(), 0)
            mine = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            mine = None  # a stock watcher thread was faster
        code = await proto.exited
        await proto.done
        transport.close()
        return mine, code

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        mine, code = run(any_loop, main())
    if mine is None:
        assert code == 9
    else:
        assert mine == 9
        assert code == 255
        assert "will report returncode 255" in caplog.text


def test_streams_readline_and_wait(any_loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            *py("import sys\nfor line in sys.stdin: print(line.strip().upper(), flush=True)"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        got = []
        for word in (b"alpha", b"beta", b"gamma"):
            proc.stdin.write(word + b"\n")
            await proc.stdin.drain()
            got.append(await proc.stdout.readline())
        proc.stdin.close()
        assert await proc.stdout.read() == b""
        assert await proc.wait() == 0
        return got

    assert run(any_loop, main()) == [b"ALPHA\n", b"BETA\n", b"GAMMA\n"]


# ------------------------------------------------------------ oxloop's own


def _state(pid):
    """'Z' for a zombie, another state letter, or None once the pid is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if int(fields[1]) != os.getpid():
        return None  # reaped, and the pid already reused by someone else
    return fields[0]


def _wait_reaped(pids):
    deadline = time.monotonic() + LIVENESS
    while time.monotonic() < deadline:
        states = {pid: _state(pid) for pid in pids}
        if all(s is None for s in states.values()):
            return
        time.sleep(0.01)
    raise AssertionError(f"children not reaped: {states}")


class _quiet_asyncio_logger:
    def __enter__(self):
        self.logger = logging.getLogger("asyncio")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL + 1)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


@pytest.fixture(params=["pidfd", "thread"])
def watch_mode(request, monkeypatch):
    """Run the test with pidfds, then again as if os.pidfd_open were unavailable."""
    if request.param == "thread":

        def no_pidfd(pid, flags=0):
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    return request.param


def test_close_loop_with_children_running_leaves_no_zombies(watch_mode):
    # Stock closes without reaping: 3.10/3.11 leave the children running, 3.12+ kill them
    # when the transport is collected and leave zombies. oxloop kills the children of
    # unclosed transports (warning as their garbage collection would) and reaps them all.
    fds = open_fds()
    loop = oxloop.new_event_loop()

    async def main():
        t1, _ = await loop.subprocess_exec(asyncio.SubprocessProtocol, "sleep", "3600")
        proc = await asyncio.create_subprocess_exec("sleep", "3600", stdout=subprocess.PIPE)
        t3, _ = await loop.subprocess_exec(asyncio.SubprocessProtocol, "sleep", "3600")
        t3.close()  # closed by the user (killed) but not reaped yet
        return [t1.get_pid(), proc.pid, t3.get_pid()], proc

    pids, proc = run(loop, main())
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        loop.close()
    _wait_reaped(pids)
    assert open_fds() == fds
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    assert proc.returncode is None  # the loop never delivered it: closed
    # The reaping thread records the status in the Popen right after reaping it.
    popen = proc._transport.get_extra_info("subprocess")
    deadline = time.monotonic() + LIVENESS
    while popen.returncode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert popen.returncode == -signal.SIGKILL


def test_exit_watching_modes(watch_mode):
    # Both ways of watching a child give the same results.
    loop = oxloop.new_event_loop()
    try:

        async def main():
            procs = [
                await asyncio.create_subprocess_exec("sh", "-c", f"exit {i}") for i in range(5)
            ]
            killed = await asyncio.create_subprocess_exec("sleep", "3600")
            killed.terminate()
            codes = await asyncio.gather(*(p.wait() for p in procs), killed.wait())
            return codes

        assert run(loop, main()) == [0, 1, 2, 3, 4, -signal.SIGTERM]
        assert not loop._child_watches
    finally:
        loop.close()


def test_popen_wait_by_the_user_keeps_the_real_status(loop, caplog):
    # Stock reports 255 whenever someone else reaped the child. When that someone is the
    # Popen object itself (proc.wait(), or proc.poll() inside Popen.send_signal), oxloop
    # takes the status Popen recorded, without the warning.
    async def main():
        transport, proto = await loop.subprocess_exec(
            lambda: RecordingProtocol(loop), "sh", "-c", "exit 6", stdin=None
        )
        transport.get_extra_info("subprocess").wait()
        code = await proto.exited
        await proto.done
        transport.close()
        return code

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        assert run(loop, main()) == 6
    assert "255" not in caplog.text


def test_no_sigchld_handler_and_other_children_untouched(loop):
    # No SIGCHLD handler is installed, and a child started by plain subprocess meanwhile
    # is never reaped by the loop (waitpid(-1) is never used).
    before = signal.getsignal(signal.SIGCHLD)
    other = subprocess.Popen(["sh", "-c", "exit 2"])

    async def main():
        procs = [await asyncio.create_subprocess_exec("true") for _ in range(3)]
        return [await p.wait() for p in procs]

    try:
        assert run(loop, main()) == [0, 0, 0]
        assert signal.getsignal(signal.SIGCHLD) == before
        assert other.wait() == 2  # still ours to reap
    finally:
        other.wait()


def test_subprocess_on_closed_loop_raises(loop):
    loop.close()
    coro = loop.subprocess_exec(asyncio.SubprocessProtocol, "true")
    with pytest.raises(RuntimeError, match="closed"):
        coro.send(None)


def test_debug_logs(loop, caplog):
    loop.set_debug(True)

    async def main():
        proc = await asyncio.create_subprocess_shell("exit 0", stdout=subprocess.PIPE)
        await proc.wait()

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(loop, main())
    assert "run shell command 'exit 0' stdout=<pipe>" in caplog.text
    assert "exited with return code 0" in caplog.text
