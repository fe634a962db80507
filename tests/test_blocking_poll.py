"""Tests of the loop's blocking poll: other threads run meanwhile, and it ends on their wake-up."""

import gc
import threading
import weakref

from support import LIVENESS, run


def test_other_python_threads_run_while_the_loop_blocks(any_loop):
    # The loop blocks with nothing scheduled: the thread can only run Python code (and so
    # wake the loop) if the loop released the GIL around its poll.
    woken = any_loop.create_future()
    results = []

    def work():
        results.append(sum(range(10_000)))
        any_loop.call_soon_threadsafe(woken.set_result, threading.get_ident())

    async def main():
        t = threading.Thread(target=work)
        t.start()
        ident = await woken
        t.join(LIVENESS)
        return ident

    ident = run(any_loop, main())
    assert ident != threading.get_ident()
    assert results == [sum(range(10_000))]


def test_many_blocking_polls_in_a_row_with_thread_wakeups(any_loop):
    # Each wake-up ends one blocking poll; the loop keeps its state across them.
    seen = []

    async def main():
        for i in range(50):
            fut = any_loop.create_future()
            threading.Thread(target=any_loop.call_soon_threadsafe, args=(fut.set_result, i)).start()
            seen.append(await fut)

    run(any_loop, main())
    assert seen == list(range(50))


def test_objects_a_thread_drops_while_the_loop_blocks_are_freed(any_loop):
    class Payload:
        pass

    box = [Payload()]
    ref = weakref.ref(box[0])
    done = any_loop.create_future()

    def drop():
        box.clear()
        any_loop.call_soon_threadsafe(done.set_result, None)

    async def main():
        t = threading.Thread(target=drop)
        t.start()
        await done
        t.join(LIVENESS)

    run(any_loop, main())
    gc.collect()
    assert ref() is None
