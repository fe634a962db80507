#!/usr/bin/env bash
# Build oxloop into .venv-X.Y for each requested Python version (default: all present).
source "$(dirname "$0")/lib.sh"
for v in ${*:-$VERSIONS}; do
  ensure_python "$v" || { echo "skip: python$v cannot be had here"; continue; }
  ensure_venv "$v" "${TEST_DEPS[@]}"
  build_ext "$v"
  echo "built oxloop for python$v"
done
