# Throwaway PostgreSQL cluster for tests and benchmarks; source this file.
#
#   start_postgres   starts a cluster on a free loopback port and exports
#                    ROSTER_TEST_POSTGRES_URL (an admin URL)
#   stop_postgres    stops it and removes its files
#
# ROSTER_TEST_POSTGRES_SHARED_BUFFERS sets the cluster's shared_buffers
# (default 1GB).
#
# PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` user. Fails with a clear message when PostgreSQL is missing.

pg_bindir() {
  if [ -n "${ROSTER_TEST_POSTGRES_BINDIR:-}" ]; then echo "$ROSTER_TEST_POSTGRES_BINDIR"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  return 1
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}

start_postgres() {
  local bindir port
  if ! bindir=$(pg_bindir); then
    echo "error: PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH)." >&2
    echo "       install it with: apt-get install -y postgresql" >&2
    return 1
  fi
  PG_DIR=$(mktemp -d /tmp/roster-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR"; fi
  as_postgres "$bindir/initdb -D $PG_DIR/data -U postgres --auth=trust -N -E UTF8 --no-locale >$PG_DIR/initdb.log 2>&1" \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_postgres "$bindir/pg_ctl -D $PG_DIR/data -l $PG_DIR/postgres.log -w -t 60 \
    -o '-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=${ROSTER_TEST_POSTGRES_SHARED_BUFFERS:-1GB}' start >/dev/null" \
    || { cat "$PG_DIR/postgres.log" >&2; return 1; }
  PG_BINDIR=$bindir
  export ROSTER_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "postgres: started on 127.0.0.1:$port ($PG_DIR)"
}

stop_postgres() {
  if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ]; then
    as_postgres "$PG_BINDIR/pg_ctl -D $PG_DIR/data -m immediate -w stop >/dev/null 2>&1" || true
    rm -rf "$PG_DIR"
    echo "postgres: stopped"
  fi
}
