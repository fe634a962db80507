"""Run CPython's own test.test_asyncio suite against oxloop, per installed Python version.

For every Python version (3.10-3.15 by default) this launches, with that version's
``.venv-X.Y/bin/python``, one child process per test module (conformance/module_child.py),
at most ``--jobs`` at a time. A child streams per-test start/end events; a test that exceeds
``--timeout`` seconds, or a child that crashes, costs that one test: the child is killed, the
test is recorded as failed and a new child carries on with the module's remaining tests.

Tests are counted only when they ran on oxloop (made at least one oxloop loop, or belong to
the oxloop subclasses of the loop-parametrised mixins); the others are reported as
"not on oxloop". Tests listed in conformance/exclusions.txt are not run.

Results: a per-module table and a total line per version on stdout, per-module logs and
conformance/results/summary-X.Y.json (``-asyncio`` suffix for the stock loop).
``--check-baseline`` exits non-zero when a version's passed count drops below
conformance/baseline.json; ``--write-baseline`` records the current figures there.

Examples:
  python conformance/run.py                                 # every version, oxloop
  python conformance/run.py --python-versions 3.12 --modules test_tasks,locks
  python conformance/run.py --loop asyncio                  # validate with the stock loop
  python conformance/run.py --check-baseline
"""

import argparse
import concurrent.futures
import fnmatch
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHILD = HERE / "module_child.py"
RESULTS = HERE / "results"
DEFAULT_EXCLUSIONS = HERE / "exclusions.txt"
DEFAULT_BASELINE = HERE / "baseline.json"
ALL_VERSIONS = ("3.10", "3.11", "3.12", "3.13", "3.14", "3.15")
MAX_CHILDREN_PER_MODULE = 100
# Rough relative durations for ordering when no earlier summary exists (longest first).
HEAVY_MODULES = (
    "test_events",
    "test_tasks",
    "test_subprocess",
    "test_sslproto",
    "test_ssl",
    "test_streams",
    "test_base_events",
    "test_sendfile",
    "test_sock_lowlevel",
    "test_unix_events",
    "test_locks",
    "test_futures",
)

PROBE = r"""
import json, os, sys, importlib.util
info = {"version": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable}
spec = importlib.util.find_spec("test.test_asyncio")
info["test_dir"] = list(spec.submodule_search_locations)[0] if spec else None
try:
    import oxloop
    info["oxloop"] = getattr(oxloop, "__file__", "?")
    missing = [n for n in ("Loop", "new_event_loop", "EventLoopPolicy") if not hasattr(oxloop, n)]
    info["oxloop_error"] = ("oxloop lacks " + ", ".join(missing)) if missing else None
except BaseException as exc:
    info["oxloop"] = None
    info["oxloop_error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(info))
"""


# ---------------------------------------------------------------------------------------
# exclusions and baseline files


def load_exclusions(path, version):
    """Patterns from the exclusions file that apply to ``version``.

    Each line: ``[X.Y[,X.Y...]:] <test id or glob> # reason``; the reason is mandatory.
    """
    patterns = []
    if not path.exists():
        return patterns
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        body, sep, reason = line.partition("#")
        body = body.strip()
        if not sep or not reason.strip():
            raise SystemExit(f"{path}:{lineno}: exclusion without a '# reason': {raw!r}")
        versions = None
        head, colon, rest = body.partition(":")
        if colon and all(v.strip().replace(".", "").isdigit() for v in head.split(",")):
            versions = {v.strip() for v in head.split(",")}
            body = rest.strip()
        if " " in body or not body:
            raise SystemExit(f"{path}:{lineno}: malformed exclusion: {raw!r}")
        if versions is None or version in versions:
            patterns.append(body)
    return patterns


def load_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------------
# one module: a sequence of child processes


class ModuleRun:
    """Runs one test module for one Python version, restarting the child as needed."""

    def __init__(self, version, python, module, args, exclusions, log_dir, registry):
        self.version = version
        self.python = python
        self.module = module
        self.args = args
        self.exclusions = exclusions
        self.log_path = log_dir / f"{module}.log"
        self.registry = registry
        self.tests = {}  # id -> {"outcome", "loops", "ours", "msg", "time"}
        self.planned = {}  # id -> ours flag, from the first plan
        self.excluded = []
        self.dropped = []
        self.fixture_errors = []
        self.status = "ok"  # ok | skipped | error
        self.note = ""
        self.children = 0
        self.elapsed = 0.0

    # -- bookkeeping --

    def record(self, tid, outcome, loops, msg, seconds):
        ours = self.planned.get(tid, False)
        self.tests[tid] = {
            "outcome": outcome,
            "loops": loops,
            "ours": ours,
            "msg": msg,
            "time": seconds,
        }

    def remaining(self):
        return [t for t in self.planned if t not in self.tests]

    # -- running --

    def run(self):
        start = time.monotonic()
        with open(self.log_path, "w", encoding="utf-8") as log:
            while True:
                self.children += 1
                finished, progressed = self.run_child(log)
                if finished or self.status != "ok" or self.registry.stopping:
                    break
                left = self.remaining()
                if not self.planned or not left:
                    break
                if not progressed or self.children >= MAX_CHILDREN_PER_MODULE:
                    why = (
                        "child died again without progress"
                        if not progressed
                        else "too many child restarts"
                    )
                    for tid in left:
                        self.record(tid, "failed", 0, f"not run: {why}", 0.0)
                    break
        self.elapsed = time.monotonic() - start
        return self

    def run_child(self, log):
        """One child process. Returns (finished normally, made progress)."""
        log.write(
            f"\n===== child {self.children} for {self.module} "
            f"(python {self.version}, loop {self.args.loop}) =====\n"
        )
        log.flush()
        workdir = Path(tempfile.mkdtemp(prefix=f"oxloop-conf-{self.version}-{self.module}-"))
        read_fd, write_fd = os.pipe()
        cfg_path = workdir / "child-config.json"
        cfg_path.write_text(
            json.dumps(
                {
                    "module": self.module,
                    "loop": self.args.loop,
                    "timeout": self.args.timeout,
                    "status_fd": write_fd,
                    "skip_ids": sorted(self.tests),
                    "exclusions": self.exclusions,
                }
            ),
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONASYNCIODEBUG", None)
        wdir = workdir / "cwd"
        wdir.mkdir()
        proc = subprocess.Popen(
            [str(self.python), "-X", "faulthandler", str(CHILD), str(cfg_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,
            cwd=wdir,
            env=env,
        )
        os.close(write_fd)
        self.registry.add(proc)
        inflight = None
        inflight_loops = 0
        inflight_since = 0.0
        got_plan = False
        done = False
        progressed = False
        eof = False
        buf = b""
        last_event = time.monotonic()
        killed_for = None
        try:
            while True:
                if not eof:
                    ready, _, _ = select.select([read_fd], [], [], 0.25)
                    if ready:
                        data = os.read(read_fd, 1 << 16)
                        if not data:
                            eof = True
                        buf += data
                        *lines, buf = buf.split(b"\n")
                        for line in lines:
                            try:
                                ev = json.loads(line)
                            except ValueError:
                                continue
                            kind = ev.get("ev")
                            if kind in ("start", "end", "plan"):
                                last_event = time.monotonic()
                            if kind == "plan":
                                got_plan = True
                                if not self.planned:
                                    self.planned = {t: ours for t, ours in ev["tests"]}
                                    self.excluded = ev["excluded"]
                                    self.dropped = ev["dropped"]
                            elif kind == "start":
                                inflight, inflight_loops = ev["id"], ev.get("loops", 0)
                                inflight_since = time.monotonic()
                                progressed = True
                            elif kind == "loop":
                                inflight_loops += 1
                            elif kind == "end":
                                self.record(
                                    ev["id"],
                                    ev["outcome"],
                                    ev["loops"],
                                    ev["msg"],
                                    ev.get("time", 0.0),
                                )
                                inflight = None
                                progressed = True
                            elif kind == "fixture":
                                if ev["kind"] == "error":
                                    self.fixture_errors.append(f"{ev['desc']}: {ev['msg']}")
                            elif kind == "module_skip":
                                self.status, self.note = "skipped", ev["msg"]
                            elif kind == "module_error":
                                self.status, self.note = "error", ev["msg"]
                            elif kind == "done":
                                done = True
                else:
                    time.sleep(0.25)
                rc = proc.poll()
                if rc is not None and (eof or done or not select.select([read_fd], [], [], 0)[0]):
                    break
                limit = self.args.timeout if got_plan else max(self.args.timeout, 120)
                if time.monotonic() - last_event > limit:
                    killed_for = "timeout"
                    break
        finally:
            if proc.poll() is None and killed_for:
                log.write(
                    f"\n===== harness: killing child after {self.args.timeout}s "
                    f"without progress (in test: {inflight}) =====\n"
                )
                log.flush()
            kill_group(proc)
            self.registry.discard(proc)
            os.close(read_fd)
            shutil.rmtree(workdir, ignore_errors=True)
        rc = proc.returncode
        if done:
            return True, progressed
        if self.status != "ok":
            return True, progressed
        reason = "timeout" if killed_for else f"crash (exit status {rc})"
        if inflight is not None:
            self.record(
                inflight,
                "failed",
                inflight_loops,
                reason,
                round(time.monotonic() - inflight_since, 3),
            )
            progressed = True
        elif not got_plan:
            self.status = "error"
            self.note = f"child died before listing tests: {reason}; see {self.log_path}"
        else:
            log.write(f"\n===== harness: child ended outside a test: {reason} =====\n")
        return False, progressed

    # -- results --

    def counts(self):
        c = {
            "passed": 0,
            "failed": 0,
            "skipped": 0,
            "not_on_oxloop": 0,
            "excluded": len(self.excluded),
        }
        for info in self.tests.values():
            if info["loops"] > 0 or info["ours"]:
                c[info["outcome"]] += 1
            else:
                c["not_on_oxloop"] += 1
        if self.status == "error":
            c["failed"] += 1
        return c

    def summary(self):
        failing = sorted(
            t
            for t, i in self.tests.items()
            if i["outcome"] == "failed" and (i["loops"] > 0 or i["ours"])
        )
        failing = {t: self.tests[t]["msg"] for t in failing}
        if self.status == "error":
            failing[f"{self.module} <module error>"] = self.note
        not_on = {"passed": 0, "failed": 0, "skipped": 0}
        for info in self.tests.values():
            if not (info["loops"] > 0 or info["ours"]):
                not_on[info["outcome"]] += 1
        return {
            **self.counts(),
            "status": self.status,
            "note": self.note,
            "time": round(self.elapsed, 1),
            "children": self.children,
            "failing": failing,
            "not_on_oxloop_outcomes": not_on,
            "excluded_ids": self.excluded,
            "dropped_stock_variants": len(self.dropped),
            "fixture_errors": self.fixture_errors,
            # every test that ran: [outcome, loops made, in an oxloop mixin subclass, seconds]
            "tests": {
                t: [i["outcome"], i["loops"], i["ours"], i["time"]]
                for t, i in sorted(self.tests.items())
            },
        }


class Registry:
    """Live child processes, so that an interrupted run can kill them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs = set()
        self.stopping = False

    def add(self, proc):
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc):
        with self._lock:
            self._procs.discard(proc)

    def stop(self):
        """Interrupted: no new children, kill the live ones."""
        self.stopping = True
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            kill_group(proc)


def kill_group(proc):
    """Kill the child and anything it started (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


# ---------------------------------------------------------------------------------------
# versions


def find_interpreter(version):
    """Some CPython X.Y on this machine (pyenv or PATH), or None."""
    try:
        root = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        root = ""
    if root:
        for cand in sorted(Path(root, "versions").glob(f"{version}.*/bin/python{version}")):
            if os.access(cand, os.X_OK):
                return cand
    found = shutil.which(f"python{version}")
    return Path(found) if found else None


def prepare_version(version, args):
    """Return (info dict, None) for a runnable version, or (None, (kind, message))."""
    venv_python = ROOT / f".venv-{version}" / "bin" / "python"
    if not venv_python.exists():
        if find_interpreter(version) is None:
            return None, ("missing", f"Python {version} is not installed")
        return None, (
            "error",
            (
                f"Python {version} is installed but .venv-{version} is "
                f"missing (run scripts/build.sh {version})"
            ),
        )
    out = subprocess.run(
        [str(venv_python), "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    try:
        info = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None, ("error", f"Python {version}: probe failed: {out.stderr.strip()[-500:]}")
    if not info["test_dir"]:
        return None, ("error", f"Python {version}: no test.test_asyncio package in its stdlib")
    if args.loop == "oxloop" and info["oxloop_error"]:
        return None, (
            "error",
            (
                f"Python {version}: oxloop is not importable from "
                f".venv-{version}: {info['oxloop_error']}"
            ),
        )
    info["python"] = venv_python
    modules = sorted(p.stem for p in Path(info["test_dir"]).glob("test_*.py"))
    if args.modules:
        wanted = [m if m.startswith("test_") else f"test_{m}" for m in args.modules]
        unknown = [m for m in wanted if m not in modules]
        if unknown:
            print(f"[{version}] no such module(s): {', '.join(unknown)}")
        modules = [m for m in modules if m in wanted]
    info["modules"] = modules
    return info, None


def summary_path(version, loop):
    return RESULTS / (
        f"summary-{version}.json" if loop == "oxloop" else f"summary-{version}-{loop}.json"
    )


def order_key(version, module, loop):
    previous = load_json(summary_path(version, loop)) or {}
    seconds = previous.get("modules", {}).get(module, {}).get("time")
    if seconds is None:
        seconds = 100 - HEAVY_MODULES.index(module) if module in HEAVY_MODULES else 0
    return -seconds


# ---------------------------------------------------------------------------------------
# reporting


COLUMNS = ("passed", "failed", "skipped", "not_on_oxloop", "excluded")


def print_table(version, info, runs, wall, loop):
    label = "oxloop" if loop == "oxloop" else "stock asyncio loop"
    print(f"\nPython {version} ({info['version']}), {label}, wall time {wall:.0f}s")
    print(
        f"  {'module':<24}{'passed':>8}{'failed':>8}{'skipped':>8}{'not-on-loop':>12}"
        f"{'excluded':>9}{'time':>8}"
    )
    total = dict.fromkeys(COLUMNS, 0)
    for run in sorted(runs, key=lambda r: r.module):
        c = run.counts()
        for k in COLUMNS:
            total[k] += c[k]
        extra = (
            f"  [{run.status}: {run.note.splitlines()[0] if run.note else ''}]"
            if run.status != "ok"
            else ""
        )
        print(
            f"  {run.module:<24}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>8}"
            f"{c['not_on_oxloop']:>12}{c['excluded']:>9}{run.elapsed:>7.0f}s{extra}"
        )
    print(
        f"  {'TOTAL':<24}{total['passed']:>8}{total['failed']:>8}{total['skipped']:>8}"
        f"{total['not_on_oxloop']:>12}{total['excluded']:>9}"
    )
    return total


def write_summary(version, info, runs, total, wall, args):
    RESULTS.mkdir(parents=True, exist_ok=True)
    modules = {r.module: r.summary() for r in sorted(runs, key=lambda r: r.module)}
    failing = {f"{t}": msg for r in runs for t, msg in r.summary()["failing"].items()}
    data = {
        "python": version,
        "interpreter": info["version"],
        "loop": args.loop,
        "timeout": args.timeout,
        "partial": bool(args.modules),
        "wall_time": round(wall, 1),
        "totals": total,
        "modules": modules,
        "failing": dict(sorted(failing.items())),
        "slowest": {
            t: i["time"]
            for t, i in sorted(
                ((t, i) for r in runs for t, i in r.tests.items()),
                key=lambda item: -item[1]["time"],
            )[:20]
        },
    }
    path = summary_path(version, args.loop)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def check_baseline(baseline, results, problems, args):
    """Compare passed counts to the baseline; return False if any version regressed."""
    ok = True
    if baseline is None:
        print(f"\nbaseline: {args.baseline} does not exist; nothing to check")
        return True
    if baseline.get("loop", "oxloop") != args.loop:
        print(
            f"\nbaseline: {args.baseline} is for loop {baseline.get('loop')!r}, not {args.loop!r}"
        )
        return False
    print("\nbaseline check:")
    for version in args.versions:
        base = baseline.get("versions", {}).get(version)
        if version in problems:
            kind, message = problems[version]
            if kind == "missing":
                print(f"  {version}: skipped ({message})")
            elif base and base.get("passed", 0) > 0:
                print(f"  {version}: FAIL ({message})")
                ok = False
            else:
                print(f"  {version}: not checked ({message})")
            continue
        if base is None:
            print(f"  {version}: no baseline entry; not checked")
            continue
        runs = results[version]
        passed = {r.module: r.counts()["passed"] for r in runs}
        if args.modules:
            expected = sum(base.get("modules", {}).get(m, 0) for m in passed)
        else:
            expected = base.get("passed", 0)
        got = sum(passed.values())
        verdict = "ok" if got >= expected else "FAIL"
        ok = ok and got >= expected
        print(f"  {version}: passed {got} (baseline {expected}) {verdict}")
        for module, n in sorted(passed.items()):
            want = base.get("modules", {}).get(module)
            if want is not None and n < want:
                # A drop in one module fails even if another module gained.
                print(f"      {module}: passed {n} < baseline {want}  FAIL")
                ok = False
    return ok


def write_baseline(baseline, results, args):
    data = baseline or {}
    data["loop"] = args.loop
    data.setdefault(
        "note",
        "passed counts per Python version and module; "
        "regenerate with: python conformance/run.py --write-baseline",
    )
    versions = data.setdefault("versions", {})
    for version, runs in results.items():
        entry = versions.setdefault(version, {"passed": 0, "modules": {}})
        if not args.modules:
            entry["modules"] = {}
        for run in runs:
            entry["modules"][run.module] = run.counts()["passed"]
        entry["modules"] = dict(sorted(entry["modules"].items()))
        entry["passed"] = sum(entry["modules"].values())
    data["versions"] = dict(sorted(versions.items()))
    args.baseline.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"\nbaseline written: {args.baseline}")


# ---------------------------------------------------------------------------------------


def run_version(version, info, args, registry):
    """Run the modules of one version, ``args.jobs`` at a time; print and save results."""
    log_dir = RESULTS / f"logs-{version}-{args.loop}"
    log_dir.mkdir(parents=True, exist_ok=True)
    exclusions = load_exclusions(args.exclusions, version)
    tasks = [
        ModuleRun(version, info["python"], module, args, exclusions, log_dir, registry)
        for module in info["modules"]
    ]
    tasks.sort(key=lambda r: order_key(version, r.module, args.loop))
    print(
        f"\nPython {version}: {len(tasks)} modules on {args.loop}, {args.jobs} at a time, "
        f"{args.timeout:g}s per test; logs in {log_dir.relative_to(ROOT)}/",
        flush=True,
    )
    runs = []
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(task.run) for task in tasks]
        try:
            for fut in concurrent.futures.as_completed(futures):
                run = fut.result()
                runs.append(run)
                c = run.counts()
                status = "" if run.status == "ok" else f" [{run.status}]"
                print(
                    f"  [{version}] {run.module:<22} passed {c['passed']:>4}  "
                    f"failed {c['failed']:>3}  skipped {c['skipped']:>3}  not-on-loop "
                    f"{c['not_on_oxloop']:>4}  ({run.elapsed:.0f}s){status}",
                    flush=True,
                )
        except KeyboardInterrupt:
            registry.stop()
            for fut in futures:
                fut.cancel()
            raise
    wall = time.monotonic() - t0
    total = print_table(version, info, runs, wall, args.loop)
    if not args.modules:
        excluded = [t for run in runs for t in run.excluded]
        for pattern in exclusions:
            if not any(fnmatch.fnmatchcase(t, pattern) for t in excluded):
                print(f"  warning: exclusion {pattern!r} matched no test on Python {version}")
    path = write_summary(version, info, runs, total, wall, args)
    print(f"  summary: {path.relative_to(ROOT)}", flush=True)
    return runs


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--python-versions",
        default=",".join(ALL_VERSIONS),
        help="comma-separated X.Y list (default: %(default)s)",
    )
    p.add_argument(
        "--modules", default="", help="comma-separated test_asyncio modules (default: all)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds a single test may run (default: %(default)s)",
    )
    p.add_argument("--jobs", type=int, default=2, help="modules run at once (default: 2)")
    p.add_argument(
        "--loop",
        choices=("oxloop", "asyncio"),
        default="oxloop",
        help="loop under test; 'asyncio' = stock SelectorEventLoop, to validate the harness",
    )
    p.add_argument("--exclusions", type=Path, default=DEFAULT_EXCLUSIONS)
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help=f"baseline file (default: {DEFAULT_BASELINE.relative_to(ROOT)})",
    )
    p.add_argument(
        "--check-baseline",
        action="store_true",
        help="exit 1 if passed (per version) is below the baseline",
    )
    p.add_argument(
        "--write-baseline",
        action="store_true",
        help="record this run's passed counts in the baseline file",
    )
    args = p.parse_args(argv)
    args.versions = [v.strip() for v in args.python_versions.split(",") if v.strip()]
    args.modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    if args.write_baseline and args.baseline is None and args.loop != "oxloop":
        p.error("--write-baseline with --loop asyncio needs an explicit --baseline file")
    args.baseline = args.baseline or DEFAULT_BASELINE
    args.jobs = max(1, args.jobs)
    return args


def main(argv=None):
    args = parse_args(argv)
    baseline = load_json(args.baseline)
    problems = {}
    prepared = {}
    for version in args.versions:
        info, problem = prepare_version(version, args)
        if problem:
            problems[version] = problem
            print(problem[1])
        else:
            prepared[version] = info
    registry = Registry()
    results = {}
    t0 = time.monotonic()
    try:
        for version, info in prepared.items():
            results[version] = run_version(version, info, args, registry)
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    for version, (kind, message) in problems.items():
        print(f"\nPython {version}: {'skipped' if kind == 'missing' else 'ERROR'}: {message}")
    print(f"\nall done in {time.monotonic() - t0:.0f}s")
    code = 0
    if args.write_baseline:
        if args.loop == "oxloop" and not prepared:
            print("nothing ran; baseline not written")
        else:
            write_baseline(baseline, results, args)
    if args.check_baseline and not check_baseline(baseline, results, problems, args):
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
