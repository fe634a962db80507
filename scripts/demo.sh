#!/usr/bin/env bash
# Build oxloop into .venv-3.12 (or the newest Python present) and run the demo.
source "$(dirname "$0")/lib.sh"
for v in 3.12 3.13 3.11 3.10; do
  if [ -n "$(find_python "$v")" ]; then break; fi
done
ensure_venv "$v" uvloop
build_ext "$v"
exec "$ROOT/.venv-$v/bin/python" "$ROOT/examples/demo.py"
