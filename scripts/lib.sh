# Shared shell helpers for the project scripts: find interpreters, make venvs, build the extension.
# Sourced, not run. Every venv lives in the checkout (.venv-X.Y, git-ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSIONS="${OXLOOP_PYTHONS:-3.10 3.11 3.12 3.13 3.14 3.15}"
# Versions that pyenv on these machines lacks: ensure_python installs them from Debian's
# binary packages into /opt/pythonX.Y (scripts/python-from-debian.sh).
DEBIAN_VERSIONS="3.14 3.15"
# Frameworks the pytest suite runs on oxloop (tests/test_frameworks.py). uvicorn>=0.36 for
# `--loop module:factory`; websockets>=14 for its asyncio API.
TEST_DEPS=(
  "uvicorn>=0.36,<1" "starlette>=0.40,<2" "httpx>=0.27,<1" "aiohttp>=3.10,<4"
  "websockets>=14,<18" "trustme>=1.1,<2"
)

# Print the path of a CPython X.Y interpreter, or nothing if there is none.
find_python() {
  local v="$1" p
  if command -v pyenv >/dev/null 2>&1; then
    for p in "$(pyenv root)"/versions/"$v".*/bin/python"$v"; do
      [ -x "$p" ] && { echo "$p"; return 0; }
    done
  fi
  p="/opt/python$v/bin/python$v"
  [ -x "$p" ] && { echo "$p"; return 0; }
  p="$(command -v "python$v" 2>/dev/null || true)"
  [ -n "$p" ] && echo "$p"
  return 0
}

# ensure_python X.Y: make sure a CPython X.Y is there, installing 3.14/3.15 from Debian's
# packages when missing (a minute at most). Fails, saying why, if it cannot be had.
ensure_python() {
  local v="$1" log
  [ -n "$(find_python "$v")" ] && return 0
  case " $DEBIAN_VERSIONS " in
    *" $v "*) ;;
    *) echo "python$v is not installed (install it with pyenv)" >&2; return 1 ;;
  esac
  mkdir -p "$ROOT/target"
  log="$ROOT/target/install-python$v.log"
  echo "installing python$v from Debian's packages into /opt/python$v (log: $log)" >&2
  if ! bash "$ROOT/scripts/python-from-debian.sh" "$v" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "python$v could not be installed" >&2
    return 1
  fi
  [ -n "$(find_python "$v")" ]
}

# ensure_venv X.Y [extra pip packages...]: make .venv-X.Y with maturin, pytest and the extras.
ensure_venv() {
  local v="$1"; shift
  local py venv
  venv="$ROOT/.venv-$v"
  py="$(find_python "$v")"
  [ -n "$py" ] || { echo "python$v not found" >&2; return 1; }
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
  fi
  local stamp="$venv/.deps-$(echo "$*" | cksum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -U pip
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      "maturin>=1.10,<2" "pytest>=8" "pytest-timeout>=2.3" "$@"
    touch "$stamp"
  fi
}

# build_ext X.Y: build the extension in release mode and install it into .venv-X.Y (editable).
build_ext() {
  local v="$1"
  local venv="$ROOT/.venv-$v" log="$ROOT/target/build-py$v.log"
  mkdir -p "$ROOT/target"
  if ! (cd "$ROOT" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
    CARGO_TARGET_DIR="$ROOT/target/py$v" \
    "$venv/bin/maturin" develop --release >"$log" 2>&1); then
    cat "$log" >&2
    echo "build for python$v failed" >&2
    return 1
  fi
}
