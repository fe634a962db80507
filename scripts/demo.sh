#!/usr/bin/env bash
# Build oxloop into .venv-3.14 (installing CPython 3.14 when missing; else the newest
# Python present) and run the demo.
source "$(dirname "$0")/lib.sh"
for v in 3.14 3.15 3.13 3.12 3.11 3.10; do
  if ensure_python "$v" 2>/dev/null; then break; fi
done
ensure_venv "$v" uvloop
build_ext "$v"
exec "$ROOT/.venv-$v/bin/python" "$ROOT/examples/demo.py"
