#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (Debian's server binaries, `initdb` + `pg_ctl` on
# a temp dir, loopback only, a free port), run as an unprivileged user when started as root
# (initdb refuses root).
#
#   eval "$(bash scripts/test-postgres.sh start)"   # exports PYROGATE_TEST_POSTGRES_URL/_DIR
#   bash scripts/test-postgres.sh stop "$PYROGATE_TEST_POSTGRES_DIR"
#
# The server is for tests only: fsync is off and the password is a fixture.
set -euo pipefail

bin_dir() {
  local initdb
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$initdb" ]; then
    echo "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin); run scripts/install-test-deps.sh" >&2
    exit 1
  fi
  dirname "$initdb"
}

# Runs a command as the server's user: this one, or `nobody` when this one is root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u nobody -- "$@"
  else
    "$@"
  fi
}

start() {
  local bin dir port password=pyrogate-test
  bin=$(bin_dir)
  dir=$(mktemp -d /tmp/pyrogate-postgres.XXXXXX)
  chmod 700 "$dir"
  printf '%s\n' "$password" >"$dir/pwfile"
  if [ "$(id -u)" = 0 ]; then
    chown -R nobody "$dir"
  fi
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$bin/initdb" --pgdata="$dir/data" --username=postgres --pwfile="$dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
    --no-instructions --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
  as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --silent \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
        -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2 || { cat "$dir/server.log" >&2; exit 1; }
  echo "export PYROGATE_TEST_POSTGRES_URL=postgres://postgres:$password@127.0.0.1:$port/postgres"
  echo "export PYROGATE_TEST_POSTGRES_DIR=$dir"
}

stop() {
  local dir=$1
  [ -d "$dir/data" ] || return 0
  as_owner "$(bin_dir)/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait --silent stop >&2 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?the directory start printed}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
