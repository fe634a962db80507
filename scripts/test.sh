#!/usr/bin/env bash
# Build oxloop for every supported Python (3.10-3.15; 3.14/3.15 installed from Debian's
# packages when missing), lint, run CPython's test_asyncio conformance run, failing if it
# drops below the baseline, then the pytest suite on each version.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
start=$(date +%s)
present=()
for v in $VERSIONS; do
  if ensure_python "$v"; then present+=("$v"); else echo "skip: python$v cannot be had here"; fi
done
[ ${#present[@]} -gt 0 ] || { echo "no supported Python found" >&2; exit 1; }
lint_v="${present[${#present[@]}-1]}"

echo "== build (${present[*]})"
for v in "${present[@]}"; do
  ensure_venv "$v" "${TEST_DEPS[@]}"
  build_ext "$v"
done

echo "== lint"
cargo fmt --all -- --check
"$ROOT/.venv-$lint_v/bin/python" -m pip install -q --disable-pip-version-check "ruff==0.17.5"
PYO3_PYTHON="$ROOT/.venv-$lint_v/bin/python" CARGO_TARGET_DIR="$ROOT/target/py$lint_v" \
  cargo clippy --release --all-targets -q -- -D warnings
echo "== cargo test"
PYO3_PYTHON="$ROOT/.venv-$lint_v/bin/python" CARGO_TARGET_DIR="$ROOT/target/py$lint_v" \
  cargo test --release -q
"$ROOT/.venv-$lint_v/bin/ruff" check python tests conformance examples scripts bench
"$ROOT/.venv-$lint_v/bin/ruff" format --check python tests conformance examples bench

failed=0
echo "== CPython test_asyncio conformance (${present[*]})"
versions_csv=$(IFS=,; echo "${present[*]}")
"$ROOT/.venv-$lint_v/bin/python" conformance/run.py --python-versions "$versions_csv" \
  --timeout 15 --check-baseline || failed=1

summaries=()
for v in "${present[@]}"; do
  echo "== pytest on python$v"
  out="$ROOT/target/pytest-py$v.txt"
  set +e
  "$ROOT/.venv-$v/bin/python" -m pytest tests -q -p no:cacheprovider | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" -eq 0 ] || failed=1
  summaries+=("$(tail -n 1 "$out")")
done
echo "== done in $(( $(date +%s) - start ))s"

# The closing line: every Python version's pytest counts added up.
printf '%s\n' "${summaries[@]}" | "$ROOT/.venv-$lint_v/bin/python" -c "
import re, sys
t = dict(passed=0, failed=0, skipped=0)
for line in sys.stdin:
    for n, word in re.findall(r'(\d+) (passed|failed|skipped|errors?)', line):
        t['failed' if word.startswith('error') else word] += int(n)
print('pytest: %(passed)d passed, %(failed)d failed, %(skipped)d skipped' % t)
"
exit $failed
