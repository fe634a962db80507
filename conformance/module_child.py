"""Child side of the conformance runner: run one CPython test.test_asyncio module on oxloop.

Started by conformance/run.py with the venv interpreter of one Python version and a JSON
config file. It swaps the asyncio policy for one that makes oxloop loops (or stock
SelectorEventLoops with ``--loop asyncio``), adds oxloop subclasses of the stock suite's
loop-parametrised mixins (dropping the stock per-selector subclasses), counts the loops made
during each test, and streams one JSON object per line to the parent on a pipe:

  {"ev": "plan", ...}                       tests this child will run, excluded/dropped ids
  {"ev": "start", "id": ...}                a test begins
  {"ev": "loop"}                            the running test made a loop through our factory
  {"ev": "end", "id": ..., "outcome": ...}  a test ended (passed/failed/skipped) + loop count
  {"ev": "module_skip" | "module_error"}    the module could not be loaded
  {"ev": "done"}                            all planned tests ran

All other output (unittest's verbose stream, tracebacks, test noise) goes to stdout/stderr,
which the parent sends to a per-module log file.
"""

import asyncio
import faulthandler
import fnmatch
import importlib
import json
import os
import sys
import threading
import time
import traceback
import unittest

PKG = "test.test_asyncio"

# Loop-parametrised mixins of the stock suite. For each module: the oxloop subclass to add
# (name, bases, how the loop is made), the stock concrete class whose own test_* methods are
# copied over (the Unix selector variant; it only adds generic Unix tests), and the mixins
# whose other subclasses are the stock per-selector / per-watcher variants that we drop.
MIXIN_MODULES = {
    "test_events": [
        {
            "name": "OxloopEventLoopTests",
            "bases": ["EventLoopTestsMixin", "SubprocessTestsMixin", "test_utils.TestCase"],
            "factory": "create_event_loop",
            "template": "SelectEventLoopTests",
            "replaces": ["EventLoopTestsMixin", "SubprocessTestsMixin"],
        }
    ],
    "test_sock_lowlevel": [
        {
            "name": "OxloopSockTests",
            "bases": ["BaseSockTestsMixin", "test_utils.TestCase"],
            "factory": "create_event_loop",
            "template": "SelectEventLoopTests",
            "replaces": ["BaseSockTestsMixin"],
        }
    ],
    "test_sendfile": [
        {
            "name": "OxloopSendfileTests",
            "bases": ["SendfileTestsBase", "test_utils.TestCase"],
            "factory": "create_event_loop",
            "template": "SelectEventLoopTests",
            "replaces": ["SendfileBase"],
        }
    ],
    "test_server": [
        {
            "name": "OxloopStartServerTests",
            "bases": ["BaseStartServer", "unittest.TestCase"],
            "factory": "new_loop",
            "template": "SelectorStartServerTests",
            "replaces": ["BaseStartServer"],
        }
    ],
    "test_buffered_proto": [
        {
            "name": "OxloopBufferedProtocolTests",
            "bases": ["BaseTestBufferedProtocol", "unittest.TestCase"],
            "factory": "new_loop",
            "template": "BufferedProtocolSelectorTests",
            "replaces": ["BaseTestBufferedProtocol"],
        }
    ],
    "test_sslproto": [
        {
            "name": "OxloopStartTLSTests",
            "bases": ["BaseStartTLS", "unittest.TestCase"],
            "factory": "new_loop",
            "template": "SelectorStartTLSTests",
            "replaces": ["BaseStartTLS"],
        }
    ],
    # Parametrised per stock child watcher rather than per selector; the watchers are the
    # stock loop's process machinery, so oxloop gets one plain subclass (like the stock
    # SubprocessProactorTests: the loop is made in setUp).
    "test_subprocess": [
        {
            "name": "OxloopSubprocessTests",
            "bases": ["SubprocessMixin", "test_utils.TestCase"],
            "factory": "setUp",
            "template": None,
            "replaces": ["SubprocessMixin"],
        }
    ],
}


class Reporter:
    """Writes JSON event lines to the parent and keeps the per-test loop count."""

    def __init__(self, fd):
        self._out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.current = None
        self.loops = 0

    def emit(self, ev, **fields):
        if os.getpid() != self._pid:
            return  # a test forked and the child process did not exit: stay quiet
        fields["ev"] = ev
        line = json.dumps(fields) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def loop_made(self):
        with self._lock:
            self.loops += 1
            running = self.current is not None
        if running:
            self.emit("loop")


def short_id(test_id):
    prefix = PKG + "."
    return test_id.removeprefix(prefix)


# 3.14 deprecates the policy system: its public functions warn, the private twins do not.
POLICY_DEPRECATED = sys.version_info >= (3, 14)
if POLICY_DEPRECATED:
    set_policy = asyncio.events._set_event_loop_policy
    STOCK_POLICY = asyncio.unix_events._DefaultEventLoopPolicy
else:
    set_policy = asyncio.set_event_loop_policy
    STOCK_POLICY = asyncio.DefaultEventLoopPolicy


def setup_loop_factory(kind, reporter):
    """Return (counted loop factory, loop type) and install the harness policy in asyncio."""
    if kind == "oxloop":
        import oxloop

        loop_type = oxloop.Loop
        # The class itself: oxloop.EventLoopPolicy warns on 3.14+, as asyncio's do.
        base_policy = oxloop._EventLoopPolicy
        raw_factory = oxloop.new_event_loop
    else:
        loop_type = asyncio.SelectorEventLoop
        base_policy = STOCK_POLICY
        raw_factory = asyncio.SelectorEventLoop

    def counted(make):
        reporter.loop_made()
        loop = make()
        if not isinstance(loop, loop_type):
            raise TypeError(f"harness: loop factory returned {type(loop)!r}, not a {loop_type!r}")
        return loop

    def new_loop():
        return counted(raw_factory)

    class HarnessEventLoopPolicy(base_policy):
        """The runner's policy: the loop under test's policy, with every new loop counted."""

        def new_event_loop(self):
            return counted(super().new_event_loop)

    # set_event_loop_policy(None) (many tearDownModule()s do it) re-initialises the policy
    # from asyncio.DefaultEventLoopPolicy (3.14+: unix_events._DefaultEventLoopPolicy,
    # through _set_event_loop_policy), so that name must point at ours as well.
    if POLICY_DEPRECATED:
        asyncio.unix_events._DefaultEventLoopPolicy = HarnessEventLoopPolicy
    else:
        asyncio.DefaultEventLoopPolicy = HarnessEventLoopPolicy
    set_policy(HarnessEventLoopPolicy())
    return new_loop, loop_type


def patch_test_utils():
    """Let test_utils.TestCase.close_loop handle loops without BaseEventLoop internals.

    close_loop reads ``loop._default_executor`` (a BaseEventLoop private attribute) before
    closing every loop a test made; for a loop without it, shut the executor down through
    the public coroutine and run the rest of the stock helper unchanged.
    """
    from test.test_asyncio import utils as test_utils

    original = test_utils.TestCase.close_loop

    class _NoPrivateExecutor:
        _default_executor = None

        def __init__(self, loop):
            self._loop = loop

        def __getattr__(self, name):
            return getattr(self._loop, name)

    def close_loop(loop):
        try:
            object.__getattribute__(loop, "_default_executor")
        except AttributeError:
            if not loop.is_closed():
                loop.run_until_complete(loop.shutdown_default_executor())
            return original(_NoPrivateExecutor(loop))
        return original(loop)

    test_utils.TestCase.close_loop = staticmethod(close_loop)


def resolve(module, dotted):
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _loop_in_setup(cls, new_loop):
    def setUp(self):
        # Start from a fresh policy: earlier tests of the module leave theirs with a mock
        # child watcher (GenericWatcherTests), which the dropped per-watcher classes reset.
        set_policy(None)
        super(cls, self).setUp()
        self.loop = new_loop()
        self.set_event_loop(self.loop)

    return setUp


def add_mixin_subclasses(module, modname, new_loop):
    """Add the oxloop subclasses to ``module``; return (our classes, replaced mixins)."""
    ours, replaced = [], []
    for spec in MIXIN_MODULES.get(modname, []):
        try:
            bases = tuple(resolve(module, b) for b in spec["bases"])
        except AttributeError:
            continue  # this Python version does not have the mixin
        namespace = {"__module__": module.__name__, "__qualname__": spec["name"]}
        template = getattr(module, spec["template"], None) if spec["template"] else None
        if isinstance(template, type):
            for attr, value in vars(template).items():
                if attr.startswith("test"):
                    namespace[attr] = value
        if spec["factory"] != "setUp":
            namespace[spec["factory"]] = lambda self: new_loop()
        cls = type(spec["name"], bases, namespace)
        if spec["factory"] == "setUp":
            cls.setUp = _loop_in_setup(cls, new_loop)
        setattr(module, spec["name"], cls)
        ours.append(cls)
        replaced.extend(resolve(module, m) for m in spec["replaces"])
    return ours, replaced


def _runners_new_loop(new_loop):
    # test_runners.BaseTest.new_loop builds asyncio.BaseEventLoop() with its selector mocked
    # and replaces shutdown_asyncgens by a flag setter the tests check: same, on our loop.
    def make(self):
        loop = new_loop()
        loop.shutdown_ag_run = False

        async def shutdown_asyncgens():
            loop.shutdown_ag_run = True

        loop.shutdown_asyncgens = shutdown_asyncgens
        return loop

    return make


def _pep492_setup(cls, new_loop):
    # test_pep492.BaseTest.setUp builds asyncio.BaseEventLoop() with its selector mocked.
    def setUp(self):
        super(cls, self).setUp()
        self.loop = new_loop()
        self.set_event_loop(self.loop)

    return setUp


def substitute_loops(module, modname, new_loop):
    """Point the modules that construct `asyncio.BaseEventLoop()` themselves at our loop.

    Returns the classes whose tests now run on the loop under test.
    """
    base = getattr(module, "BaseTest", None)
    if not isinstance(base, type):
        return []
    if modname == "test_runners" and hasattr(base, "new_loop"):
        base.new_loop = _runners_new_loop(new_loop)
        return [base]
    if modname == "test_pep492":
        base.setUp = _pep492_setup(base, new_loop)
        return [base]
    return []


def iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


class StreamingResult(unittest.TextTestResult):
    """Verbose text result (to the log) that also reports each test to the parent."""

    def __init__(self, reporter, timeout, stream, descriptions, verbosity):
        super().__init__(stream, descriptions, verbosity)
        self.reporter = reporter
        self.timeout = timeout
        self.outcome = None
        self.message = ""
        self.t_start = None
        self.ended = set()
        self.fixture_events = []  # (description, "error"|"skip", message)

    @staticmethod
    def _is_test(test):
        return isinstance(test, unittest.TestCase)

    def _set(self, outcome, message=""):
        # a failure (e.g. from a subtest or a cleanup) is never downgraded
        if self.outcome == "failed":
            return
        self.outcome = outcome
        if message:
            self.message = message[:500]

    def _err_message(self, err):
        exc_type, exc, _ = err
        text = "".join(traceback.format_exception_only(exc_type, exc)).strip()
        return text.splitlines()[-1] if text else exc_type.__name__

    def startTest(self, test):
        super().startTest(test)
        tid = short_id(test.id())
        self.outcome, self.message = None, ""
        self.t_start = time.perf_counter()
        # Loops made since the previous test ended count for this one: class and module
        # fixtures, and 3.10's IsolatedAsyncioTestCase.run(), make them before startTest().
        with self.reporter._lock:
            self.reporter.current = tid
            pending = self.reporter.loops
        self.reporter.emit("start", id=tid, loops=pending)
        if self.timeout > 2:
            faulthandler.dump_traceback_later(self.timeout - 1, exit=False)

    def stopTest(self, test):
        # (3.12+ reports a skipped test without startTest(), but with stopTest())
        super().stopTest(test)
        faulthandler.cancel_dump_traceback_later()
        tid = short_id(test.id())
        with self.reporter._lock:
            loops = self.reporter.loops
            self.reporter.current = None
            self.reporter.loops = 0
        outcome = self.outcome or "failed"
        message = self.message if self.outcome else "no outcome reported"
        elapsed = time.perf_counter() - self.t_start if self.t_start else 0.0
        self.outcome, self.message, self.t_start = None, "", None
        self.ended.add(tid)
        self.reporter.emit(
            "end", id=tid, outcome=outcome, loops=loops, msg=message, time=round(elapsed, 3)
        )

    def addSuccess(self, test):
        super().addSuccess(test)
        self._set("passed")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set("passed", "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set("failed", "unexpected success")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        if self._is_test(test):
            self._set("failed", self._err_message(err))
        else:
            self.fixture_events.append((str(test), "error", self._err_message(err)))

    def addError(self, test, err):
        super().addError(test, err)
        if self._is_test(test):
            self._set("failed", self._err_message(err))
        else:
            self.fixture_events.append((str(test), "error", self._err_message(err)))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if self._is_test(test):
            if self.outcome is None:
                self._set("skipped", str(reason))
        else:
            self.fixture_events.append((str(test), "skip", str(reason)))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set("failed", f"{short_id(subtest.id())}: {self._err_message(err)}")


def fixture_outcome(test, fixture_events):
    """Outcome of a planned test that never started (class/module fixture skipped or failed)."""
    cls = type(test)
    owners = (f"({cls.__module__}.{cls.__qualname__})", f"({cls.__module__})")
    for description, kind, message in fixture_events:
        if description.endswith(owners):
            if kind == "skip":
                return "skipped", f"{description}: {message}"
            return "failed", f"{description}: {message}"
    return "failed", "not run (no fixture event; see log)"


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    reporter = Reporter(cfg["status_fd"])
    faulthandler.enable(file=sys.stderr, all_threads=True)
    modname = cfg["module"]
    timeout = float(cfg["timeout"])
    skip_ids = set(cfg["skip_ids"])
    exclusions = cfg["exclusions"]

    new_loop, _ = setup_loop_factory(cfg["loop"], reporter)
    patch_test_utils()

    try:
        module = importlib.import_module(f"{PKG}.{modname}")
    except unittest.SkipTest as exc:
        reporter.emit("module_skip", msg=str(exc))
        return 0
    except BaseException:  # noqa: BLE001 - report anything that stops the import
        traceback.print_exc()
        reporter.emit("module_error", msg=traceback.format_exc(limit=3)[-800:])
        return 0

    ours, replaced = add_mixin_subclasses(module, modname, new_loop)
    ours.extend(substitute_loops(module, modname, new_loop))
    ours_t = tuple(ours)
    replaced_t = tuple(replaced)

    loaded = unittest.defaultTestLoader.loadTestsFromModule(module)
    selected, plan, excluded, dropped = [], [], [], []
    for test in iter_tests(loaded):
        tid = short_id(test.id())
        cls = type(test)
        if replaced_t and issubclass(cls, replaced_t) and not issubclass(cls, ours_t):
            dropped.append(tid)
            continue
        if any(fnmatch.fnmatchcase(tid, pat) for pat in exclusions):
            excluded.append(tid)
            continue
        if tid in skip_ids:
            continue
        selected.append(test)
        plan.append([tid, bool(ours_t) and issubclass(cls, ours_t)])
    reporter.emit("plan", tests=plan, excluded=excluded, dropped=dropped)

    stream = unittest.runner._WritelnDecorator(sys.stderr)
    result = StreamingResult(reporter, timeout, stream, True, 2)
    unittest.TestSuite(selected).run(result)
    result.printErrors()
    for test in selected:
        tid = short_id(test.id())
        if tid not in result.ended:
            outcome, message = fixture_outcome(test, result.fixture_events)
            reporter.emit("end", id=tid, outcome=outcome, loops=0, msg=message)
    for description, kind, message in result.fixture_events:
        reporter.emit("fixture", desc=description, kind=kind, msg=message)
    reporter.emit("done")
    return 0


if __name__ == "__main__":
    # Not the conformance directory: nothing here should shadow what the tests import.
    sys.path[:] = [
        p
        for p in sys.path
        if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))
    ]
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: leftover non-daemon threads from a test must not hang us.
    os._exit(code)
