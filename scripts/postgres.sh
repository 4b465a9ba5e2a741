# Sourced by scripts: makes PostgreSQL's server binaries (initdb, postgres, pg_ctl) available
# and exports their directory as $POSTGRES_BIN_DIR — the tests start throwaway servers from
# them, scripts/dev and scripts/bench run one (start_archive). Looks on PATH, then in Debian's
# /usr/lib/postgresql/*/bin, then installs Debian's `postgresql` package (the server is not
# started: only its binaries are used).

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

# start_archive DIR PORT LOGDIR ORDER_SERVICE_BIN — the archive for a local run: makes the
# cluster in DIR/postgres on the first run (owner and database `orderflow`, its password and
# the projection's and reader's made once and kept owner-only in DIR/postgres-*password),
# launches it on 127.0.0.1:PORT (with `launch`, scripts/processes.sh), applies the schema
# migrations as the owner with `ORDER_SERVICE_BIN archive migrate`, sets the login users'
# passwords (deploy/postgres/roles.sql) and exports what order-service connects with: ARCHIVE_URL
# and ARCHIVE_PASSWORD_FILE as `orderflow_projection` (writes), ARCHIVE_READER_USER and
# ARCHIVE_READER_PASSWORD_FILE as `orderflow_reader` (reads). PostgreSQL will not run as root: under root it runs as the `postgres` user (or
# `nobody`), and DIR is made traversable (not readable) for it.
start_archive() {
  local dir=$1 port=$2 logs=$3 order_service=$4
  local data="$dir/postgres" password="$dir/postgres-password"
  local projection="$dir/postgres-projection-password" reader="$dir/postgres-reader-password"
  local as_db_user=() db_user secret
  for secret in "$password" "$projection" "$reader"; do
    if [ ! -s "$secret" ]; then
      (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret")
    fi
  done
  if [ "$(id -u)" = 0 ]; then
    db_user=$(id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody)
    as_db_user=(setpriv --reuid="$db_user" --regid="$(id -g "$db_user")" --clear-groups)
    chown "$db_user" "$password"
    chmod o+x "$dir"
  fi
  if [ ! -s "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ -z "${db_user:-}" ] || chown "$db_user" "$data"
    # --no-sync: a local cluster need not wait for the disk here (on a busy machine that took
    # the most of a first start); the server syncs what it writes from then on.
    "${as_db_user[@]}" "$POSTGRES_BIN_DIR/initdb" -D "$data" -U orderflow --pwfile="$password" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync \
      >"$logs/initdb.log" 2>&1 \
      || { cat "$logs/initdb.log" >&2; return 1; }
    echo "CREATE DATABASE orderflow;" \
      | "${as_db_user[@]}" "$POSTGRES_BIN_DIR/postgres" --single -D "$data" postgres >/dev/null
  fi
  launch postgres "$logs/postgres.log" "${as_db_user[@]}" "$POSTGRES_BIN_DIR/postgres" \
    -D "$data" -p "$port" -c listen_addresses=127.0.0.1 -c unix_socket_directories="$data"
  local _ migrated=
  for _ in $(seq 1 300); do
    if ARCHIVE_URL="postgres://orderflow@127.0.0.1:$port/orderflow" ARCHIVE_PASSWORD_FILE="$password" \
      "$order_service" archive migrate >"$logs/archive-migrate.log" 2>&1; then
      migrated=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$migrated" ]; then
    echo "the archive's migration failed (see $logs/archive-migrate.log, $logs/postgres.log)" >&2
    return 1
  fi
  # The owner logs in over the cluster's socket (trust for local connections), the passwords
  # reach psql in its environment, never on a command line.
  ARCHIVE_PROJECTION_PASSWORD="$(cat "$projection")" ARCHIVE_READER_PASSWORD="$(cat "$reader")" \
    "${as_db_user[@]}" "$POSTGRES_BIN_DIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$data" -p "$port" \
    -U orderflow -d orderflow -f "$(dirname "${BASH_SOURCE[0]}")/../deploy/postgres/roles.sql" \
    >"$logs/archive-roles.log" 2>&1 \
    || { echo "setting the archive's users failed (see $logs/archive-roles.log)" >&2; return 1; }
  export ARCHIVE_URL="postgres://orderflow_projection@127.0.0.1:$port/orderflow"
  export ARCHIVE_PASSWORD_FILE="$projection"
  export ARCHIVE_READER_USER=orderflow_reader
  export ARCHIVE_READER_PASSWORD_FILE="$reader"
}
