"""Callgrind plumbing for bench/bench.py's `instr` workload: run a process under callgrind,
read its instruction counts phase by phase, and turn two counts into instructions per op.

Callgrind counts the instructions a process executes in user space (`Ir`). A phase's count
is what `callgrind_control --dump` writes at its end (each dump restarts the count), taken
once the process sleeps (has finished the phase's work); a figure per op is
(Ir(N2) - Ir(N1)) / (N2 - N1) over two phases of N1 and N2 ops, which cancels what does not
scale with N (connecting, starting a benchmark, the dump itself). The count is the same run
to run as long as what the process does does not depend on timing (the load generator's
--lockstep sees to that for the servers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

# --collect-systime=no is callgrind's default, spelled out: system time is not measured,
# instructions are user space only.
CALLGRIND = ["valgrind", "--tool=callgrind", "--collect-systime=no", "-q"]
# A fixed hash seed: str hashes (and so dict/set layouts) are the same run to run.
ENV = {"PYTHONHASHSEED": "0"}


def missing_tools():
    """The tools this needs that are not on PATH (empty if all are)."""
    return [t for t in ("valgrind", "callgrind_control") if shutil.which(t) is None]


def callgrind_cmd(out_file, cmd):
    """`cmd` under callgrind, writing its profile (and each dump, as OUT.N) to `out_file`."""
    return [*CALLGRIND, f"--callgrind-out-file={out_file}", *cmd]


def parse_total(text):
    """The `Ir` total of a callgrind profile (the `summary:` line, else `totals:`; they agree
    except after a `--zero`, where `totals:` still counts what came before it)."""
    events = None
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key == "events" and events is None:
            events = value.split()
        elif key in ("totals", "summary"):
            found[key] = value.split()
    if not events or "Ir" not in events:
        raise ValueError("not a callgrind profile with Ir counts (no `events:` line with Ir)")
    values = found.get("summary") or found.get("totals")
    if values is None:
        raise ValueError("callgrind profile without a totals: or summary: line")
    i = events.index("Ir")
    return int(values[i]) if i < len(values) else 0


def per_op(ir1, n1, ir2, n2):
    """Instructions per op from two phases: Ir(N1) over N1 ops and Ir(N2) over N2 ops."""
    if n2 <= n1:
        raise ValueError(f"the second phase must do more ops ({n2} <= {n1})")
    return (ir2 - ir1) / (n2 - n1)


def proc_state(stat_text):
    """The state letter (R, S, D, ...) in the text of /proc/PID/stat."""
    rest = stat_text[stat_text.rfind(")") + 1 :].split()
    if not rest:
        raise ValueError("not /proc/PID/stat text")
    return rest[0]


def wait_idle(pid, timeout=300):
    """Wait until process `pid` sleeps in the kernel (state S): a single-threaded server or
    worker then waits for its next event, done with the last one."""
    deadline = time.monotonic() + timeout
    while True:
        with open(f"/proc/{pid}/stat") as f:
            state = proc_state(f.read())
        if state == "S":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} did not go idle in {timeout} s (state {state})")
        time.sleep(0.001)


class Callgrind:
    """A process under callgrind (by pid) whose counts are read phase by phase."""

    def __init__(self, out_file, pid):
        self.out_file = out_file
        self.pid = pid
        self.dumps = 0

    def _control(self, *args):
        cmd = ["callgrind_control", *args, str(self.pid)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0 or "OK" not in p.stdout:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")

    def dump(self):
        """End a phase once the process is idle: its Ir total (callgrind writes OUT.N and
        counts from zero again)."""
        wait_idle(self.pid)
        self.dumps += 1
        self._control(f"--dump=phase{self.dumps}")
        path = f"{self.out_file}.{self.dumps}"
        with open(path) as f:
            total = parse_total(f.read())
        return total


def two_phases(cg, run, n1, n2):
    """Dump, run(n1), dump, run(n2), dump: the figures of both phases as a dict.

    `run(n)` does the work and returns the ops it did (which may differ from n)."""
    cg.dump()  # what came before: not counted
    ops1 = run(n1)
    ir1 = cg.dump()
    ops2 = run(n2)
    ir2 = cg.dump()
    return {"n1": ops1, "ir1": ir1, "n2": ops2, "ir2": ir2, "per_op": per_op(ir1, ops1, ir2, ops2)}


def env():
    """The environment for a process under callgrind."""
    return {**os.environ, **ENV}
