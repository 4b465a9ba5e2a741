# Sourced by scripts: makes PostgreSQL's server binaries (initdb, postgres, pg_ctl) available
# and exports their directory as $POSTGRES_BIN_DIR — the tests start throwaway servers from
# them, and scripts/dev runs one. Looks on PATH, then in Debian's /usr/lib/postgresql/*/bin,
# then installs Debian's `postgresql` package (the server is not started: only its binaries
# are used).

postgres_bin_dir_ok() {
  [ -x "$1/initdb" ] && [ -x "$1/postgres" ] && [ -x "$1/pg_ctl" ]
}

find_postgres_bin_dir() {
  local found dir
  if [ -n "${POSTGRES_BIN_DIR:-}" ] && postgres_bin_dir_ok "$POSTGRES_BIN_DIR"; then
    return 0
  fi
  found=$(command -v initdb 2>/dev/null || true)
  if [ -n "$found" ]; then
    dir=$(dirname "$(readlink -f "$found")")
    if postgres_bin_dir_ok "$dir"; then
      export POSTGRES_BIN_DIR="$dir"
      return 0
    fi
  fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if postgres_bin_dir_ok "$dir"; then
      export POSTGRES_BIN_DIR="$dir"
      return 0
    fi
  done
  return 1
}

ensure_postgres() {
  if find_postgres_bin_dir; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "==> installing PostgreSQL's server binaries (Debian's postgresql)" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q --no-install-recommends postgresql >&2 \
      || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends postgresql >&2; }; } || true
    if find_postgres_bin_dir; then
      return 0
    fi
  fi
  echo "PostgreSQL server binaries (initdb, postgres) not found: install Debian's \`postgresql\` package, or set POSTGRES_BIN_DIR" >&2
  return 1
}
