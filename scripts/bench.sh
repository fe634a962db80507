#!/usr/bin/env bash
# The project benchmark: oxloop vs stock asyncio vs uvloop (bench/bench.py; issue #6).
#   bash scripts/bench.sh [--quick] [--rounds N] [--workloads micro,echo,http,tls,memory,pipe,instr]
# Makes .venv-3.12 (override: OXLOOP_BENCH_PYTHON=3.X) with uvloop and httptools from PyPI,
# builds oxloop (release) and the Rust load generator, then runs the benchmark (Markdown on
# stdout, JSON in bench/results/). Needs the openssl CLI for the TLS workload, valgrind
# (callgrind) for instr (instructions per request; not in the default set).
source "$(dirname "$0")/lib.sh"
if [[ " $* " == *instr* ]]; then
  for tool in valgrind callgrind_control; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "the instr workload needs valgrind ($tool not found): install valgrind" \
        "(e.g. apt-get install valgrind) or leave instr out of --workloads" >&2
      exit 1
    }
  done
fi
v="${OXLOOP_BENCH_PYTHON:-3.12}"
ensure_venv "$v" uvloop httptools
build_ext "$v"
echo "built oxloop for python$v" >&2
(cd "$ROOT/bench/loadgen" && CARGO_TARGET_DIR="$ROOT/target/loadgen" \
  cargo build --release --locked --quiet)
echo "built the load generator (target/loadgen/release)" >&2
export OXLOOP_BENCH_COMMAND="bash scripts/bench.sh${*:+ $*}"
exec "$ROOT/.venv-$v/bin/python" "$ROOT/bench/bench.py" "$@"
