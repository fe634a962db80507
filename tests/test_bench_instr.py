"""Tests for bench/instr.py, the callgrind helpers of the benchmark's `instr` workload."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
_spec = importlib.util.spec_from_file_location("bench_instr", os.path.join(BENCH, "instr.py"))
instr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(instr)

PROFILE = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 123
cmd:  python (bench) servers.py
part: 2

positions: line
events: Ir
summary: 3062719

fn=(1) main
0 3062719

totals: 4589041
"""


def test_parse_total_prefers_summary():
    # After a --zero, totals: still counts what came before it; summary: is the part's own.
    assert instr.parse_total(PROFILE) == 3062719


def test_parse_total_falls_back_to_totals():
    text = PROFILE.replace("summary: 3062719\n", "")
    assert instr.parse_total(text) == 4589041


def test_parse_total_picks_the_ir_column():
    text = "events: Dr Ir Dw\nsummary: 5 42 7\n"
    assert instr.parse_total(text) == 42


@pytest.mark.parametrize(
    "text",
    ["", "events: Dr\nsummary: 5\n", "events: Ir\n", "cmd: summary: 1\n"],
)
def test_parse_total_rejects_what_is_not_a_profile(text):
    with pytest.raises(ValueError):
        instr.parse_total(text)


def test_per_op_is_the_difference_over_the_ops():
    assert instr.per_op(1_500_000, 200, 3_000_000, 600) == 3750.0
    # Constant costs (connecting, starting up) cancel whatever their size.
    assert instr.per_op(10**9 + 200 * 7, 200, 10**9 + 600 * 7, 600) == 7.0


@pytest.mark.parametrize("n2", [200, 100])
def test_per_op_needs_a_bigger_second_phase(n2):
    with pytest.raises(ValueError):
        instr.per_op(1, 200, 2, n2)


@pytest.mark.parametrize(
    "stat, state",
    [
        ("123 (python3.12) S 1 123 123 0 -1", "S"),
        ("7 (a) b) c) R 1 7", "R"),  # the command name may hold spaces and parentheses
    ],
)
def test_proc_state(stat, state):
    assert instr.proc_state(stat) == state


def test_proc_state_of_this_process():
    with open(f"/proc/{os.getpid()}/stat") as f:
        assert instr.proc_state(f.read()) == "R"  # it is running: it reads its own stat


def test_callgrind_cmd_counts_user_space_only():
    cmd = instr.callgrind_cmd("/tmp/out", ["python", "-c", "pass"])
    assert cmd[:2] == ["valgrind", "--tool=callgrind"]
    assert "--collect-systime=no" in cmd
    assert "--callgrind-out-file=/tmp/out" in cmd
    assert cmd[-3:] == ["python", "-c", "pass"]


class FakeCallgrind:
    """Dumps that return scripted counts."""

    def __init__(self, counts):
        self.counts = list(counts)
        self.calls = []

    def dump(self):
        self.calls.append("dump")
        return self.counts.pop(0)


def test_two_phases_dumps_around_each_phase():
    cg = FakeCallgrind([999_999, 1_000_000, 2_000_000])

    def run(n):
        cg.calls.append(f"run {n}")
        return n

    r = instr.two_phases(cg, run, 100, 300)
    assert cg.calls == ["dump", "run 100", "dump", "run 300", "dump"]
    assert r == {"n1": 100, "ir1": 1_000_000, "n2": 300, "ir2": 2_000_000, "per_op": 5000.0}


def test_two_phases_uses_the_ops_done():
    cg = FakeCallgrind([0, 1000, 3000])
    r = instr.two_phases(cg, lambda n: n - 1, 11, 21)  # e.g. whole batches only
    assert (r["n1"], r["n2"], r["per_op"]) == (10, 20, 200.0)


WORKER = textwrap.dedent(
    """
    import sys
    for line in sys.stdin:
        total = 0
        for i in range(int(line)):
            total += i * i
        print(total, flush=True)
    """
)


@pytest.mark.skipif(bool(instr.missing_tools()), reason="valgrind (callgrind) not installed")
@pytest.mark.timeout(300)
def test_counts_of_a_process_under_callgrind_repeat(tmp_path):
    """Two processes doing the same work count the same instructions per op."""
    figures = []
    for k in range(2):
        out = str(tmp_path / f"worker{k}.callgrind")
        cmd = instr.callgrind_cmd(out, [sys.executable, "-S", "-c", WORKER])
        p = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=instr.env()
        )
        try:
            cg = instr.Callgrind(out, p.pid)

            def run(n, p=p):
                p.stdin.write(f"{n}\n")
                p.stdin.flush()
                assert int(p.stdout.readline()) == sum(i * i for i in range(n))
                return n

            figures.append(instr.two_phases(cg, run, 2000, 6000))
        finally:
            p.stdin.close()
            p.wait(60)
        assert p.returncode == 0
    a, b = (f["per_op"] for f in figures)
    assert a > 0
    assert abs(a - b) <= 0.01 * a, figures
