"""3.14's asyncio introspection sees oxloop's tasks as it sees stock's.

`python -m asyncio ps PID` / `pstree PID` read a running program's tasks from outside
(through the C Task's per-thread list and the running loop); `asyncio.capture_call_graph()`
and `print_call_graph()` walk the awaiting chain from inside. The same program runs once on
oxloop and once on the stock loop, and the outputs are compared, addresses and thread ids
aside.
"""

import asyncio
import io
import re
import subprocess
import sys
import textwrap

import pytest
from support import make_loop, run

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 14), reason="asyncio introspection (ps, pstree, call graphs) is 3.14's"
)

# A task tree: main awaits a reader of stdin (run_in_executor), a "branch" task waits in a
# TaskGroup for two "leaf" tasks, each waiting on an Event.
PROGRAM = textwrap.dedent(
    """
    import asyncio, sys

    async def leaf(ev):
        await ev.wait()

    async def branch(ev):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leaf(ev), name="leaf-1")
            tg.create_task(leaf(ev), name="leaf-2")

    async def main():
        ev = asyncio.Event()
        t = asyncio.create_task(branch(ev), name="branch")
        await asyncio.sleep(0.05)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        ev.set()
        await t
        print("done", flush=True)

    if sys.argv[1] == "oxloop":
        import oxloop
        oxloop.run(main())
    else:
        asyncio.run(main())
    """
)


def normalize(text):
    """Addresses (task ids) and the thread id column differ run to run; the rest must not."""
    text = re.sub(r"0x[0-9a-f]+", "0xADDR", text)
    text = re.sub(r"Task-\d+", "Task-N", text)
    return re.sub(r"^\d+ +", "TID ", text, flags=re.MULTILINE)


def introspect(tmp_path, kind):
    """The `ps` and `pstree` outputs for the program running on `kind`'s loop."""
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    proc = subprocess.Popen(
        [sys.executable, str(script), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        outputs = []
        for command in ("ps", "pstree"):
            done = subprocess.run(
                [sys.executable, "-m", "asyncio", command, str(proc.pid)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if "Operation not permitted" in done.stderr + done.stdout:
                pytest.skip(f"this machine forbids reading another process's memory: {done}")
            assert done.returncode == 0, done
            outputs.append(normalize(done.stdout))
        out, _ = proc.communicate("\n", timeout=60)
        assert out == "done\n"
        return outputs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ps_and_pstree_list_oxloop_tasks_as_stock(tmp_path):
    stock_ps, stock_tree = introspect(tmp_path, "stock")
    ox_ps, ox_tree = introspect(tmp_path, "oxloop")
    # The tasks are there with their names, coroutine stacks and awaiters...
    for name in ("Task-N", "branch", "leaf-1", "leaf-2"):
        assert name in ox_ps
    assert "Event.wait -> leaf" in ox_ps
    assert "(T) leaf-2" in ox_tree
    # ...exactly as on the stock loop.
    assert ox_ps == stock_ps
    assert ox_tree == stock_tree


def test_capture_and_print_call_graph(any_loop):
    async def leaf(ev, graphs):
        graphs.append(asyncio.capture_call_graph())
        out = io.StringIO()
        asyncio.print_call_graph(file=out)
        graphs.append(out.getvalue())
        ev.set()

    async def main():
        ev = asyncio.Event()
        graphs = []
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leaf(ev, graphs), name="leaf")
            await ev.wait()
        return graphs

    graph, printed = run(any_loop, main())
    assert graph.future.get_name() == "leaf"
    assert [f.frame.f_code.co_name for f in graph.call_stack] == ["leaf"]
    # The leaf is awaited by the main task, through the TaskGroup.
    (awaiter,) = graph.awaited_by
    assert awaiter.future is not None
    assert "* Task(name='leaf'" in printed
    assert "+ Awaited by:" in printed


def test_call_graph_reads_the_same_on_both_loops():
    def printed(kind):
        lp = make_loop(kind)
        try:

            async def leaf(out):
                asyncio.print_call_graph(file=out)

            async def main():
                out = io.StringIO()
                await asyncio.create_task(leaf(out), name="leaf")
                return out.getvalue()

            return normalize(run(lp, main()))
        finally:
            lp.close()

    assert printed("oxloop") == printed("stock")
