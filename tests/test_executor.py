"""Tests of thread offloading: run_in_executor, default executor, getaddrinfo and getnameinfo."""

import asyncio
import concurrent.futures
import socket
import sys
import threading

import pytest
from support import run


def test_run_in_executor_runs_in_another_thread(any_loop):
    def work(x, y):
        return x + y, threading.current_thread()

    result, worker = run(any_loop, any_loop.run_in_executor(None, work, 2, 3))
    assert result == 5
    assert worker is not threading.main_thread()


def test_run_in_executor_propagates_exceptions(any_loop):
    def fail():
        raise KeyError("from thread")

    with pytest.raises(KeyError, match="from thread"):
        run(any_loop, any_loop.run_in_executor(None, fail))


def test_run_in_executor_returns_an_asyncio_future(any_loop):
    fut = any_loop.run_in_executor(None, lambda: 1)
    assert asyncio.isfuture(fut)
    assert fut.get_loop() is any_loop
    assert run(any_loop, fut) == 1


def test_run_in_executor_with_explicit_executor(any_loop):
    with concurrent.futures.ThreadPoolExecutor(thread_name_prefix="explicit") as pool:
        name = run(
            any_loop, any_loop.run_in_executor(pool, lambda: threading.current_thread().name)
        )
    assert name.startswith("explicit")


def test_many_executor_jobs_complete(any_loop):
    async def main():
        return await asyncio.gather(
            *(any_loop.run_in_executor(None, pow, i, 2) for i in range(100))
        )

    assert run(any_loop, main()) == [i * i for i in range(100)]


def test_set_default_executor(any_loop):
    pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="custom-default")
    try:
        any_loop.set_default_executor(pool)
        name = run(
            any_loop, any_loop.run_in_executor(None, lambda: threading.current_thread().name)
        )
        assert name.startswith("custom-default")
    finally:
        pool.shutdown(wait=True)


def test_set_default_executor_rejects_other_executors(any_loop):
    class NotAThreadPool(concurrent.futures.Executor):
        pass

    if sys.version_info >= (3, 11):
        with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor instance"):
            any_loop.set_default_executor(NotAThreadPool())
    else:
        with pytest.warns(DeprecationWarning):
            any_loop.set_default_executor(NotAThreadPool())


def test_shutdown_default_executor_joins_threads(any_loop):
    workers = []

    async def main():
        for _ in range(4):
            workers.append(await any_loop.run_in_executor(None, threading.current_thread))
        await any_loop.shutdown_default_executor()

    run(any_loop, main())
    assert workers
    assert not any(t.is_alive() for t in workers)


def test_run_in_executor_after_shutdown_raises(any_loop):
    async def main():
        await any_loop.shutdown_default_executor()
        with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
            any_loop.run_in_executor(None, lambda: None)

    run(any_loop, main())


def test_shutdown_default_executor_without_executor(any_loop):
    assert run(any_loop, any_loop.shutdown_default_executor()) is None


def test_to_thread_runs_on_the_default_executor(any_loop):
    async def main():
        return await asyncio.to_thread(lambda: threading.current_thread())

    assert run(any_loop, main()) is not threading.main_thread()


def test_getaddrinfo_matches_the_socket_module(any_loop):
    args = ("127.0.0.1", 8080)
    kwargs = {"family": socket.AF_INET, "type": socket.SOCK_STREAM}
    expected = socket.getaddrinfo(*args, **kwargs)
    assert run(any_loop, any_loop.getaddrinfo(*args, **kwargs)) == expected


def test_getaddrinfo_localhost(any_loop):
    infos = run(
        any_loop,
        any_loop.getaddrinfo("localhost", 80, family=socket.AF_INET, proto=socket.IPPROTO_TCP),
    )
    assert infos
    assert all(info[4] == ("127.0.0.1", 80) for info in infos)


def test_getaddrinfo_error_is_gaierror(any_loop):
    with pytest.raises(socket.gaierror):
        run(any_loop, any_loop.getaddrinfo("definitely.invalid", 80, flags=socket.AI_NUMERICHOST))


def test_getnameinfo(any_loop):
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    assert run(any_loop, any_loop.getnameinfo(("127.0.0.1", 8080), flags)) == ("127.0.0.1", "8080")
