# SPDX-License-Identifier: GPL-2.0-or-later
# Sourced bash library: a throw-away PostgreSQL cluster for the HA demo and tests, reached
# only through a private unix socket directory (no TCP listener at all).
#
#   . deploy/lib/postgres.sh
#   pg_start "$work/pg" || exit 1     # exports PG_CONNINFO ("host=DIR port=5432 user=postgres")
#   pg_sql tpmma "select count(*) from packages"   # one value, psql -At
#   pg_stop                           # in the caller's EXIT trap
#
# Contract:
# - pg_start DIR: initdb (trust authentication, UTF8, C locale) and pg_ctl start of the newest
#   /usr/lib/postgresql/<version>/bin in DIR (created; as the postgres user when run as root,
#   who must be able to reach DIR: use a path under /tmp), its socket in DIR/sock,
#   listen_addresses '' (unix socket only), fsync=off (a demo cluster need not survive a power
#   cut). pg_ctl -w waits until it accepts connections (at most 60 s). Creates database tpmma.
#   Returns 1 with the server log's tail on stderr if anything fails.
# - pg_sql DB SQL: runs SQL on DB and prints the result unaligned, tuples only.
# - pg_stop: pg_ctl stop -m immediate of the cluster pg_start started, if any; idempotent.
# Needs: postgresql (Debian 12: 15), util-linux (runuser).

PG_DIR=""
PG_BIN=""
PG_CONNINFO=""

_pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  PG_DIR=$1
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
    { echo "postgres.sh: PostgreSQL is not installed (apt install postgresql)" >&2; return 1; }
  mkdir -p "$PG_DIR/sock"
  [ "$(id -u)" != 0 ] || chown postgres:postgres "$PG_DIR" "$PG_DIR/sock"
  _pg_as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 --locale=C \
    --no-sync >"$PG_DIR/initdb.log" 2>&1 ||
    { echo "postgres.sh: initdb failed:" >&2; tail -n 20 "$PG_DIR/initdb.log" >&2; return 1; }
  _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-k $PG_DIR/sock -c listen_addresses='' -c fsync=off -c max_connections=200" start \
    >/dev/null ||
    { echo "postgres.sh: pg_ctl start failed:" >&2; tail -n 20 "$PG_DIR/server.log" >&2; return 1; }
  PG_CONNINFO="host=$PG_DIR/sock port=5432 user=postgres"
  export PG_CONNINFO
  pg_sql postgres "create database tpmma" >/dev/null
}

pg_sql() {
  "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$PG_CONNINFO dbname=$1" -c "$2"
}

pg_stop() {
  [ -n "$PG_DIR" ] && [ -f "$PG_DIR/data/postmaster.pid" ] || return 0
  _pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
}
