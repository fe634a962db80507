"""Tests of stats()' sampled ready-queue delay: each way into the ready queue is sampled."""

import socket

from support import LIVENESS


def delays(loop):
    stats = loop.stats()
    return stats["ready_delay_p50"], stats["ready_delay_p99"]


def check(p50, p99):
    assert isinstance(p50, float)
    assert isinstance(p99, float)
    assert 0.0 <= p50 <= p99 < LIVENESS


def test_nothing_ran_no_delay_figures(loop):
    assert delays(loop) == (None, None)


def test_timers_alone_are_sampled(loop):
    for i in range(64):
        loop.call_later(0.0001 * (i % 4), lambda: None)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    check(*delays(loop))


def test_reader_callbacks_alone_are_sampled(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    calls = []

    def on_readable():
        a.recv(1)
        calls.append(1)
        if len(calls) == 64:
            loop.stop()
        else:
            b.send(b"x")

    try:
        loop.add_reader(a, on_readable)
        b.send(b"x")
        loop.run_forever()
        loop.remove_reader(a)
    finally:
        a.close()
        b.close()
    assert len(calls) == 64
    check(*delays(loop))


def test_call_soon_alone_is_sampled(loop):
    for _ in range(64):
        loop.call_soon(lambda: None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    check(*delays(loop))
