"""Tests of fd readiness callbacks: add/remove_reader and add/remove_writer, level-triggered."""

import asyncio
import os
import socket
import threading

import pytest
from support import run


def fill_send_buffer(sock):
    """Write to ``sock`` until the kernel buffer is full; return the number of bytes written."""
    total = 0
    chunk = b"x" * 65536
    while True:
        try:
            total += sock.send(chunk)
        except BlockingIOError:
            return total


def test_reader_is_called_when_readable(any_loop, pair):
    a, b = pair
    got = any_loop.create_future()

    def on_readable(tag):
        any_loop.remove_reader(a.fileno())
        got.set_result((tag, a.recv(100)))

    any_loop.add_reader(a.fileno(), on_readable, "tag")
    any_loop.call_later(0.01, b.send, b"hello")
    assert run(any_loop, got) == ("tag", b"hello")


def test_reader_accepts_an_object_with_fileno(any_loop, pair):
    a, b = pair
    got = any_loop.create_future()
    any_loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(10)))
    b.send(b"obj")
    assert run(any_loop, got) == b"obj"
    # the object and its fd number name the same registration
    assert any_loop.remove_reader(a.fileno()) is True
    assert any_loop.remove_reader(a) is False


def test_reader_is_not_called_without_data(any_loop, pair):
    a, _ = pair
    calls = []
    any_loop.add_reader(a, calls.append, 1)
    run(any_loop, asyncio.sleep(0.05))
    assert calls == []
    assert any_loop.remove_reader(a) is True


def test_reader_is_level_triggered(any_loop, pair):
    a, b = pair
    b.send(b"x")
    calls = []
    done = any_loop.create_future()

    def on_readable():
        calls.append(1)  # deliberately does not drain the socket
        if len(calls) == 3:
            any_loop.remove_reader(a)
            done.set_result(None)

    any_loop.add_reader(a, on_readable)
    run(any_loop, done)
    assert len(calls) == 3
    assert a.recv(10) == b"x"


def test_reader_is_called_at_eof(any_loop, pair):
    a, b = pair
    got = any_loop.create_future()

    def on_readable():
        any_loop.remove_reader(a)
        got.set_result(a.recv(10))

    any_loop.add_reader(a, on_readable)
    b.close()
    assert run(any_loop, got) == b""


def test_remove_reader_return_values(any_loop, pair):
    a, _ = pair
    assert any_loop.remove_reader(a) is False
    any_loop.add_reader(a, lambda: None)
    assert any_loop.remove_reader(a) is True
    assert any_loop.remove_reader(a) is False


def test_remove_writer_return_values(any_loop, pair):
    a, _ = pair
    assert any_loop.remove_writer(a) is False
    any_loop.add_writer(a, lambda: None)
    assert any_loop.remove_writer(a) is True
    assert any_loop.remove_writer(a) is False


def test_add_reader_replaces_the_previous_callback(any_loop, pair):
    a, b = pair
    calls = []
    done = any_loop.create_future()

    def second():
        calls.append("second")
        any_loop.remove_reader(a)
        done.set_result(None)

    any_loop.add_reader(a, calls.append, "first")
    any_loop.add_reader(a, second)
    b.send(b"x")
    run(any_loop, done)
    assert calls == ["second"]


def test_removed_reader_is_not_called(any_loop, pair):
    a, b = pair
    calls = []
    any_loop.add_reader(a, calls.append, 1)
    assert any_loop.remove_reader(a) is True
    b.send(b"x")
    run(any_loop, asyncio.sleep(0.05))
    assert calls == []


def test_writer_is_called_when_writable(any_loop, pair):
    a, _ = pair
    got = any_loop.create_future()

    def on_writable(tag):
        any_loop.remove_writer(a)
        got.set_result(tag)

    any_loop.add_writer(a, on_writable, "w")
    assert run(any_loop, got) == "w"


def test_writer_is_level_triggered(any_loop, pair):
    a, _ = pair
    calls = []
    done = any_loop.create_future()

    def on_writable():
        calls.append(1)
        if len(calls) == 3:
            any_loop.remove_writer(a)
            done.set_result(None)

    any_loop.add_writer(a, on_writable)
    run(any_loop, done)
    assert len(calls) == 3


def test_writer_waits_for_the_buffer_to_drain(any_loop, pair):
    a, b = pair
    written = fill_send_buffer(a)
    assert written > 0
    calls = []
    got = any_loop.create_future()

    def on_writable():
        calls.append(1)
        any_loop.remove_writer(a)
        got.set_result(None)

    any_loop.add_writer(a, on_writable)
    run(any_loop, asyncio.sleep(0.05))
    assert calls == []

    def drain():
        try:
            while b.recv(1 << 20):
                pass
        except BlockingIOError:
            pass

    any_loop.call_soon(drain)
    run(any_loop, got)
    assert calls == [1]


def test_reader_and_writer_on_one_fd_are_independent(any_loop, pair):
    a, b = pair
    events = []
    wrote = any_loop.create_future()
    read = any_loop.create_future()

    def on_writable():
        events.append("w")
        assert any_loop.remove_writer(a) is True
        wrote.set_result(None)

    def on_readable():
        events.append("r")
        assert any_loop.remove_reader(a) is True
        read.set_result(a.recv(10))

    any_loop.add_reader(a, on_readable)
    any_loop.add_writer(a, on_writable)
    run(any_loop, wrote)
    assert events == ["w"]  # nothing to read yet; the reader stays registered
    b.send(b"data")
    assert run(any_loop, read) == b"data"
    assert events == ["w", "r"]
    assert any_loop.remove_writer(a) is False
    assert any_loop.remove_reader(a) is False


def test_removing_the_writer_keeps_the_reader(any_loop, pair):
    a, b = pair
    got = any_loop.create_future()
    any_loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(10)))
    any_loop.add_writer(a, lambda: None)
    assert any_loop.remove_writer(a) is True
    b.send(b"still")
    assert run(any_loop, got) == b"still"
    assert any_loop.remove_reader(a) is True


def test_reader_on_a_pipe(any_loop):
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        got = any_loop.create_future()

        def on_readable():
            any_loop.remove_reader(r)
            got.set_result(os.read(r, 10))

        any_loop.add_reader(r, on_readable)
        any_loop.call_later(0.01, os.write, w, b"pipe")
        assert run(any_loop, got) == b"pipe"
    finally:
        os.close(r)
        os.close(w)


def test_many_fds_at_once(any_loop):
    pairs = [socket.socketpair() for _ in range(64)]
    try:
        got = {}
        done = any_loop.create_future()

        def on_readable(i, sock):
            any_loop.remove_reader(sock)
            got[i] = sock.recv(10)
            if len(got) == len(pairs) and not done.done():
                done.set_result(None)

        for i, (a, _) in enumerate(pairs):
            a.setblocking(False)
            any_loop.add_reader(a, on_readable, i, a)
        for i, (_, b) in enumerate(reversed(pairs)):
            b.send(str(len(pairs) - 1 - i).encode())
        run(any_loop, done)
        assert got == {i: str(i).encode() for i in range(len(pairs))}
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_fd_number_reused_after_remove_and_close(any_loop):
    a, b = socket.socketpair()
    any_loop.add_reader(a, lambda: None)
    assert any_loop.remove_reader(a) is True
    old = a.fileno()
    a.close()
    b.close()
    c, d = socket.socketpair()
    try:
        if c.fileno() != old:
            c, d = d, c
        got = any_loop.create_future()

        def on_readable():
            any_loop.remove_reader(c)
            got.set_result(c.recv(10))

        any_loop.add_reader(c, on_readable)
        d.send(b"reused")
        assert run(any_loop, got) == b"reused"
    finally:
        c.close()
        d.close()


@pytest.mark.parametrize("method", ["add_reader", "add_writer", "remove_reader", "remove_writer"])
def test_invalid_file_object_is_a_value_error(any_loop, method):
    args = (lambda: None,) if method.startswith("add") else ()
    with pytest.raises(ValueError, match="Invalid file object"):
        getattr(any_loop, method)("not a file", *args)


def test_add_reader_from_another_thread_while_the_loop_polls(loop, pair):
    # The loop is blocked in its poll (nothing else to do) when another thread registers
    # a reader: that poll must report the fd, and nothing may raise.
    a, b = pair
    got = loop.create_future()
    errors = []

    def register():
        try:
            loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(10)))
            b.send(b"ping")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    timer = threading.Timer(0.1, register)
    timer.start()
    try:
        assert loop.run_until_complete(asyncio.wait_for(got, 10)) == b"ping"
    finally:
        timer.join()
        loop.remove_reader(a)
    assert errors == []
