#!/usr/bin/env bash
# Install CPython 3.14/3.15 (which pyenv here lacks) from Debian sid's (fallback forky's)
# binary .debs, unpacked into /opt/pythonX.Y with their own glibc; the host system is left
# untouched. scripts/lib.sh (ensure_python) runs it for a version that is missing.
# usage: bash scripts/python-from-debian.sh [3.14] [3.15]
#   env: SUITES="sid forky" OPT=/opt WITH_DEV=1 EXTRA_PKGS=
set -euo pipefail
SUITES=${SUITES:-sid forky}; OPT=${OPT:-/opt}
VERSIONS=("$@"); [ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(3.14)
export DEBIAN_FRONTEND=noninteractive
URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$URI" ] || URI=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^https?:/){print $i; exit}}' /etc/apt/sources.list)
URI=${URI%/}; KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
command -v patchelf >/dev/null || { apt-get update -qq; apt-get install -y -qq --no-install-recommends patchelf >/dev/null; }

# Private apt state: never touches the system's apt/dpkg state.
A=$(mktemp -d /tmp/pyinst-apt.XXXXXX); trap 'rm -rf "$A"' EXIT
mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/etc/preferences.d" "$A/etc/sources.list.d"; : > "$A/status"
APT=(apt-get -q -o Dir::Etc="$A/etc" -o Dir::Etc::SourceList="$A/etc/sources.list"
  -o Dir::Etc::SourceParts="$A/etc/sources.list.d" -o Dir::Etc::Preferences="$A/etc/preferences"
  -o Dir::Etc::PreferencesParts="$A/etc/preferences.d" -o Dir::State::Lists="$A/lists"
  -o Dir::State::status="$A/status" -o Dir::Cache="$A" -o Dir::Cache::archives="$A/archives"
  -o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" -o APT::Architecture=amd64
  -o APT::Architectures::=amd64 -o Debug::NoLocking=1 -o APT::Install-Recommends=0
  -o Acquire::Languages=none -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false
  -o APT::Sandbox::User=root)
download_closure() {  # SUITE PKG...: resolve deps, download, hash-checked vs signed index
  local suite=$1; shift
  if [ "$suite" != "${CUR_SUITE:-}" ]; then
    echo "deb [signed-by=$KEYRING] $URI $suite main" > "$A/etc/sources.list"
    rm -rf "$A/lists"/*_*; CUR_SUITE=
    "${APT[@]}" update >/dev/null || return 1; CUR_SUITE=$suite
  fi
  rm -f "$A"/archives/*.deb; "${APT[@]}" install -y --download-only "$@" >/dev/null
}

MA=x86_64-linux-gnu
for V in "${VERSIONS[@]}"; do
  ROOT=$OPT/python$V
  PKGS=(python$V python$V-venv libpython$V-testsuite ${EXTRA_PKGS:-})
  [ "${WITH_DEV:-1}" = 1 ] && PKGS+=(python$V-dev)
  ok=; for S in $SUITES; do download_closure "$S" "${PKGS[@]}" && { ok=$S; break; }; done
  [ -n "$ok" ] || { echo "python$V: not installable from: $SUITES" >&2; exit 1; }
  rm -rf "$ROOT.new"; mkdir -p "$ROOT.new"
  for d in "$A"/archives/*.deb; do dpkg-deb -x "$d" "$ROOT.new"; done
  ls "$A"/archives/ | grep '\.deb$' > "$ROOT.new/DEBS.txt"
  rm -rf "$ROOT"; mv "$ROOT.new" "$ROOT"
  # Own glibc as ELF interpreter; DT_RPATH (also used for dlopen'ed extension modules).
  patchelf --set-interpreter "$(readlink -f "$ROOT/usr/lib/$MA/ld-linux-x86-64.so.2")" \
    --force-rpath --set-rpath "$ROOT/usr/lib/$MA:$ROOT/lib/$MA" "$ROOT/usr/bin/python$V"
  # ensurepip wheels live in our tree, not /usr/share/python-wheels
  grep -rl /usr/share/python-wheels "$ROOT/usr/lib/python$V" | grep -v /test/ |
    xargs -r sed -i "s#/usr/share/python-wheels#$ROOT/usr/share/python-wheels#g"
  # Debian's pyconfig.h is a multiarch stub that would resolve to the host's /usr/include
  H=$ROOT/usr/include/$MA/python$V/pyconfig.h
  [ ! -f "$H" ] || cp "$H" "$ROOT/usr/include/python$V/pyconfig.h"
  mkdir -p "$ROOT/bin"; ln -sf ../usr/bin/python$V "$ROOT/bin/python$V"; ln -sf python$V "$ROOT/bin/python3"
  "$ROOT/bin/python$V" -c "import ssl,sqlite3,ctypes,zlib,lzma,bz2,readline,venv,asyncio,test.support,sys; print('python', sys.version.split()[0], ssl.OPENSSL_VERSION)"
  echo "python$V from Debian $ok -> $ROOT/bin/python$V"
done
