"""Pytest fixtures for the suite: a fresh oxloop (or stock) loop per test, policy restore."""

import asyncio
import socket

import pytest
from support import close_loop, make_loop

import oxloop

# Default per-test timeout (pytest-timeout) unless a test sets its own, so one hang can't eat the
# whole run.
DEFAULT_TEST_TIMEOUT = 30


@pytest.fixture
def loop():
    """A fresh oxloop loop, closed after the test."""
    lp = oxloop.new_event_loop()
    try:
        yield lp
    finally:
        close_loop(lp)


@pytest.fixture(params=["oxloop", "stock"])
def any_loop(request):
    """A fresh loop, once oxloop and once stock asyncio: the assertions must hold for both."""
    lp = make_loop(request.param)
    try:
        yield lp
    finally:
        close_loop(lp)


@pytest.fixture
def pair():
    """A connected pair of non-blocking stream sockets, closed after the test."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
def restore_policy():
    """Put the default asyncio policy back after a test that installs oxloop's."""
    try:
        yield
    finally:
        # 3.14 deprecates set_event_loop_policy; its private twin does the same quietly.
        getattr(asyncio.events, "_set_event_loop_policy", asyncio.set_event_loop_policy)(None)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT))
