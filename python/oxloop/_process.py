"""Subprocesses: `subprocess_exec`, `subprocess_shell` and the subprocess transport.

The child is started with `subprocess.Popen`; its standard pipes become oxloop's Rust pipe
transports (through `connect_read_pipe` / `connect_write_pipe`, as the stock loop does).

Exit watching uses no child watcher and no SIGCHLD handler. Each child gets a pidfd
(`os.pidfd_open`, Linux 5.3+) watched as a reader on the loop; when it becomes readable the
child is reaped with `os.waitpid(pid, WNOHANG)`. Where pidfds are unavailable a daemon
thread per child blocks in `os.waitpid(pid, 0)` and hands the status to the loop with
`call_soon_threadsafe`. Only the child's own pid is ever waited for, never -1, so code that
reaps its own children elsewhere in the process is not disturbed.

The transport follows the stock callback order: `connection_made` once every pipe is
connected (pipe events and the exit seen before that are queued behind it), then
`pipe_data_received` / `pipe_connection_lost` / `process_exited` as they happen, and
`connection_lost` only once the process has exited and every pipe is closed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import warnings
from asyncio import protocols, transports
from asyncio.log import logger

_PY311 = sys.version_info >= (3, 11)
# When wait() returns for a call made while the child runs: at the exit on 3.10 and again
# from 3.14 (gh-119710), once the pipes are closed too (at connection_lost) on 3.11-3.13.
_WAIT_ENDS_AT_EXIT = not _PY311 or sys.version_info >= (3, 14)


def _format_pipe(spec) -> str:
    if spec == subprocess.PIPE:
        return "<pipe>"
    if spec == subprocess.STDOUT:
        return "<stdout>"
    return repr(spec)


def _check_text_args(universal_newlines, bufsize, text, encoding, errors) -> None:
    # Pipes carry bytes: every text-mode switch of Popen is refused, as stock does.
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


class ProcessMethods:
    """The subprocess methods of `oxloop.Loop`."""

    __slots__ = ()

    async def subprocess_shell(
        self,
        protocol_factory,
        cmd,
        *,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=True,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if not shell:
            raise ValueError("shell must be True")
        _check_text_args(False, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        what = None
        if self.get_debug():
            # The command line is not logged in full: it may hold secrets.
            what = f"run shell command {cmd!r}"
            self._log_subprocess(what, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, cmd, True, stdin, stdout, stderr, bufsize, **kwargs
        )
        if what is not None:
            logger.info("%s: %r", what, transport)
        return transport, protocol

    async def subprocess_exec(
        self,
        protocol_factory,
        program,
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=False,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        if universal_newlines:
            raise ValueError("universal_newlines must be False")
        if shell:
            raise ValueError("shell must be False")
        _check_text_args(False, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        what = None
        if self.get_debug():
            what = f"execute program {program!r}"
            self._log_subprocess(what, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, (program, *args), False, stdin, stdout, stderr, bufsize, **kwargs
        )
        if what is not None:
            logger.info("%s: %r", what, transport)
        return transport, protocol

    def _log_subprocess(self, msg, stdin, stdout, stderr) -> None:
        parts = [msg]
        if stdin is not None:
            parts.append(f"stdin={_format_pipe(stdin)}")
        if stdout is not None and stderr == subprocess.STDOUT:
            parts.append(f"stdout=stderr={_format_pipe(stdout)}")
        else:
            if stdout is not None:
                parts.append(f"stdout={_format_pipe(stdout)}")
            if stderr is not None:
                parts.append(f"stderr={_format_pipe(stderr)}")
        logger.debug(" ".join(parts))

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        self._check_closed()
        waiter = self.create_future()
        transport = SubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, waiter, extra, **kwargs
        )
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            await transport._wait()
            raise
        return transport

    def _close_children(self) -> None:
        """On loop close: kill the children of unclosed transports, reap every child left.

        A transport still open when its loop closes is reported (ResourceWarning, as its
        garbage collection would) and closed, which kills a running child. The exit status
        of each child still being watched is then collected off the loop (a daemon thread
        when it has not died yet), so no zombie outlives the loop.
        """
        watches = getattr(self, "_child_watches", None)
        if not watches:
            return
        pending = list(watches.values())
        watches.clear()
        left = []
        for watch in pending:
            # Detached first: a waitpid thread that wakes from here on records the status
            # in the Popen itself instead of queueing it on a loop that won't run again.
            needs_reaping = watch.detach()
            transport = watch.transport
            if not transport._closed:
                warnings.warn(
                    f"unclosed transport {transport!r}",
                    ResourceWarning,
                    stacklevel=1,
                    source=transport,
                )
                try:
                    transport.close()
                except Exception:
                    logger.exception("Error closing %r on loop close", transport)
            transport._drop_pipes()
            if needs_reaping:
                left.append(watch)
        if left:
            try:
                threading.Thread(
                    target=_reap_all, args=(left,), name="oxloop-reaper", daemon=True
                ).start()
            except RuntimeError:
                pass  # interpreter shutdown: the children go to init, which reaps them


def _reap_all(watches) -> None:
    for watch in watches:
        try:
            _, status = os.waitpid(watch.pid, 0)
        except ChildProcessError:
            continue
        watch.set_popen_returncode(os.waitstatus_to_exitcode(status))


class _ChildWatch:
    """Waits for one child's exit and hands its return code to the transport."""

    __slots__ = ("loop", "transport", "pid", "pidfd", "popen", "detached")

    def __init__(self, loop, transport) -> None:
        self.loop = loop
        self.transport = transport
        self.popen = transport._proc
        self.pid = transport._pid
        self.pidfd = None
        self.detached = False

    def start(self) -> None:
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is None:
            self._start_thread()
        else:
            self.pidfd = pidfd
            try:
                self.loop._add_reader(pidfd, self._pidfd_readable)
            except BaseException:
                self.pidfd = None
                os.close(pidfd)
                raise
        self.loop._child_watches[self.pid] = self

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._wait_blocking, name=f"oxloop-waitpid-{self.pid}", daemon=True
        )
        thread.start()

    def send_signal(self, sig) -> bool:
        """Signal the child through its pidfd (no pid-reuse race); False without one."""
        pidfd = self.pidfd
        if pidfd is None:
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True

    def _close_pidfd(self) -> None:
        pidfd = self.pidfd
        if pidfd is not None:
            self.pidfd = None
            if not self.loop.is_closed():
                self.loop.remove_reader(pidfd)
            os.close(pidfd)

    def _pidfd_readable(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            returncode = None
        except BaseException:
            # Any other failure goes to the exception handler, with the pidfd closed (not
            # leaked, and not reported readable again and again).
            self._close_pidfd()
            raise
        else:
            if pid == 0:
                # Readable yet not exited: not expected from a pidfd, but a level-triggered
                # reader must not spin on it. Wait in a thread instead.
                self._close_pidfd()
                self._start_thread()
                return
            returncode = os.waitstatus_to_exitcode(status)
        self._close_pidfd()
        self._deliver(returncode)

    def _wait_blocking(self) -> None:
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            returncode = None
        else:
            returncode = os.waitstatus_to_exitcode(status)
            # Recorded at once: the Popen must not look alive (to Popen.__del__, or to a
            # send_signal meanwhile) once its pid is free for reuse.
            self.set_popen_returncode(returncode)
        if self.detached:
            return
        try:
            self.loop.call_soon_threadsafe(self._deliver, returncode)
        except RuntimeError:
            pass  # the loop closed meanwhile: the child is reaped all the same

    def _deliver(self, returncode) -> None:
        if self.detached:
            return
        loop = self.loop
        if loop._child_watches.get(self.pid) is self:
            del loop._child_watches[self.pid]
        if returncode is None:
            # Someone else reaped the child. Popen knows the status if it was Popen
            # (proc.wait(), proc.poll()); otherwise the status is lost.
            returncode = getattr(self.popen, "returncode", None)
            if returncode is None:
                logger.warning("Unknown child process pid %d, will report returncode 255", self.pid)
                returncode = 255
        elif loop.get_debug():
            logger.debug("process %s exited with returncode %s", self.pid, returncode)
        self.transport._process_exited(returncode)

    def detach(self) -> bool:
        """Stop reporting to the loop (it is closing). True if the child still needs reaping."""
        self.detached = True
        if self.pidfd is None:
            return False  # the waitpid thread reaps it
        self._close_pidfd()
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True
        self.set_popen_returncode(os.waitstatus_to_exitcode(status))
        return False

    def set_popen_returncode(self, returncode) -> None:
        popen = self.popen
        if popen is not None and popen.returncode is None:
            popen.returncode = returncode


class SubprocessTransport(transports.SubprocessTransport):
    """A child process and its pipes, for a `SubprocessProtocol`."""

    def __init__(
        self,
        loop,
        protocol,
        args,
        shell,
        stdin,
        stdout,
        stderr,
        bufsize,
        waiter=None,
        extra=None,
        **kwargs,
    ) -> None:
        super().__init__(extra)
        self._loop = loop
        self._protocol = protocol
        self._closed = False
        self._finished = False
        self._proc = None
        self._pid = None
        self._returncode = None
        self._watch = None
        self._exit_waiters = []
        # Protocol calls made before connection_made, replayed right after it.
        self._pending_calls = []
        # fd -> pipe protocol, for each standard stream that is a pipe (None until connected).
        self._pipes = {}
        for fd, spec in ((0, stdin), (1, stdout), (2, stderr)):
            if spec == subprocess.PIPE:
                self._pipes[fd] = None
        try:
            # Looked up at call time, so that tests can patch subprocess.Popen.
            self._proc = subprocess.Popen(
                args,
                shell=shell,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                universal_newlines=False,
                bufsize=bufsize,
                **kwargs,
            )
        except BaseException:
            self.close()
            raise
        self._pid = self._proc.pid
        self._extra["subprocess"] = self._proc
        if loop.get_debug():
            program = args if isinstance(args, (bytes, str)) else args[0]
            logger.debug("process %r created: pid %s", program, self._pid)
        watch = _ChildWatch(loop, self)
        try:
            watch.start()
        except BaseException:
            self.close()
            raise
        self._watch = watch
        loop.create_task(self._connect_pipes(waiter))

    def __repr__(self) -> str:
        info = [type(self).__name__]
        if self._closed:
            info.append("closed")
        if self._pid is not None:
            info.append(f"pid={self._pid}")
        if self._returncode is not None:
            info.append(f"returncode={self._returncode}")
        elif self._pid is not None:
            info.append("running")
        else:
            info.append("not started")
        stdin = self._pipes.get(0)
        if stdin is not None:
            info.append(f"stdin={stdin.pipe}")
        stdout = self._pipes.get(1)
        stderr = self._pipes.get(2)
        if stdout is not None and stderr is stdout:
            info.append(f"stdout=stderr={stdout.pipe}")
        else:
            if stdout is not None:
                info.append(f"stdout={stdout.pipe}")
            if stderr is not None:
                info.append(f"stderr={stderr.pipe}")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn) -> None:
        if not self._closed:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self.close()

    # ------------------------------------------------------------ pipes

    def _pipe_protocol(self, cls, fd):
        proto = cls(self, fd)
        self._pipes[fd] = proto
        return proto

    async def _connect_pipes(self, waiter) -> None:
        try:
            proc = self._proc
            loop = self._loop
            if proc.stdin is not None:
                await loop.connect_write_pipe(
                    lambda: self._pipe_protocol(_WritePipeProtocol, 0), proc.stdin
                )
            if proc.stdout is not None:
                await loop.connect_read_pipe(
                    lambda: self._pipe_protocol(_ReadPipeProtocol, 1), proc.stdout
                )
            if proc.stderr is not None:
                await loop.connect_read_pipe(
                    lambda: self._pipe_protocol(_ReadPipeProtocol, 2), proc.stderr
                )
            loop.call_soon(self._protocol.connection_made, self)
            for callback, args in self._pending_calls:
                loop.call_soon(callback, *args)
            self._pending_calls = None
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._abandon_pipes()
            if waiter is not None and not waiter.cancelled():
                waiter.set_exception(exc)
        else:
            if waiter is not None and not waiter.cancelled():
                waiter.set_result(None)

    def _abandon_pipes(self) -> None:
        """Connecting the pipes failed: close each pipe and forget those never connected.

        Without this a pipe left unconnected would keep the transport from finishing,
        and `_wait()` (awaited by the failed `subprocess_exec`) would never return. The
        caller never gets this transport, so its protocol is not called any more: a no-op
        protocol takes its place and the calls queued for it are dropped.
        """
        self._protocol = protocols.SubprocessProtocol()
        self._pending_calls = None
        proc = self._proc
        files = {0: proc.stdin, 1: proc.stdout, 2: proc.stderr}
        for fd, proto in list(self._pipes.items()):
            if proto is None:
                del self._pipes[fd]
                if files[fd] is not None:
                    files[fd].close()
            elif proto.pipe is not None:
                proto.pipe.close()
        self._try_finish()

    def _call(self, callback, *args) -> None:
        if self._pending_calls is not None:
            self._pending_calls.append((callback, args))
        else:
            self._loop.call_soon(callback, *args)

    def _pipe_data_received(self, fd, data) -> None:
        self._call(self._protocol.pipe_data_received, fd, data)

    def _pipe_connection_lost(self, fd, exc) -> None:
        self._call(self._protocol.pipe_connection_lost, fd, exc)
        self._try_finish()

    def _drop_pipes(self) -> None:
        """Release the pipes now (the loop is closing and will not run their callbacks)."""
        for proto in self._pipes.values():
            if proto is not None and proto.pipe is not None and not proto.disconnected:
                pipe = proto.pipe
                if pipe._sock is not None:
                    pipe._call_connection_lost(None)
        proc = self._proc
        if proc is not None:
            # Pipes not connected yet: the loop will not connect them any more.
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    f.close()

    # ------------------------------------------------------------- exit

    def _process_exited(self, returncode) -> None:
        if self._returncode is not None:
            return
        if self._loop.get_debug():
            logger.info("%r exited with return code %r", self, returncode)
        self._returncode = returncode
        self._watch = None
        if self._proc.returncode is None:
            self._proc.returncode = returncode
        self._call(self._protocol.process_exited)
        if not _PY311:
            # 3.10: wait() returns at the exit, before the pipes are closed.
            self._wake_waiters()
        self._try_finish()
        if _WAIT_ENDS_AT_EXIT:
            # 3.14: the same, woken after connection_lost was scheduled.
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters = self._exit_waiters
        self._exit_waiters = None
        for waiter in waiters or ():
            if not waiter.cancelled():
                waiter.set_result(self._returncode)

    def _try_finish(self) -> None:
        if self._finished or self._returncode is None:
            return
        for proto in self._pipes.values():
            if proto is None or not proto.disconnected:
                return
        self._finished = True
        self._call(self._call_connection_lost, None)

    def _call_connection_lost(self, exc) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            if not _WAIT_ENDS_AT_EXIT:
                self._wake_waiters()
            self._loop = None
            self._proc = None
            self._protocol = None

    async def _wait(self):
        """The return code once the process has exited.

        A call made while the child runs returns at the exit on 3.10 and from 3.14 on, and
        on 3.11-3.13 only once its pipes are closed too (at connection_lost), as stock does.
        """
        if self._returncode is not None:
            return self._returncode
        waiter = self._loop.create_future()
        self._exit_waiters.append(waiter)
        return await waiter

    # --------------------------------------------------------- public API

    def get_pid(self):
        return self._pid

    def get_returncode(self):
        return self._returncode

    def get_pipe_transport(self, fd):
        proto = self._pipes.get(fd)
        return None if proto is None else proto.pipe

    def set_protocol(self, protocol) -> None:
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self) -> bool:
        return self._closed

    def _check_proc(self) -> None:
        if self._proc is None:
            raise ProcessLookupError()

    def send_signal(self, signal) -> None:
        self._check_proc()
        if self._returncode is not None or self._proc.returncode is not None:
            return  # reaped: the pid may already belong to another process
        watch = self._watch
        try:
            if watch is None or not watch.send_signal(signal):
                os.kill(self._pid, signal)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _child_running(self) -> bool:
        """True unless the child has exited; never reaps it (unlike Popen.poll)."""
        proc = self._proc
        if proc is None or self._returncode is not None or proc.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for proto in self._pipes.values():
            if proto is not None and proto.pipe is not None:
                proto.pipe.close()
        if self._child_running():
            if self._loop is not None and self._loop.get_debug():
                logger.warning("Close running child process: kill %r", self)
            try:
                self._proc.kill()
            except (ProcessLookupError, PermissionError):
                pass


class _WritePipeProtocol(protocols.BaseProtocol):
    """The protocol of the child's stdin pipe: forwards flow control and the close."""

    def __init__(self, owner, fd) -> None:
        self.proc = owner
        self.fd = fd
        self.pipe = None
        self.disconnected = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self.fd} pipe={self.pipe!r}>"

    def connection_made(self, transport) -> None:
        self.pipe = transport

    def connection_lost(self, exc) -> None:
        self.disconnected = True
        owner, self.proc = self.proc, None
        owner._pipe_connection_lost(self.fd, exc)

    def pause_writing(self) -> None:
        self.proc._protocol.pause_writing()

    def resume_writing(self) -> None:
        self.proc._protocol.resume_writing()


class _ReadPipeProtocol(_WritePipeProtocol, protocols.Protocol):
    """The protocol of the child's stdout or stderr pipe."""

    def data_received(self, data) -> None:
        self.proc._pipe_data_received(self.fd, data)
