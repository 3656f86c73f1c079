#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for a Prefect server: on 127.0.0.1 only, in a folder of its own.
#
#   scripts/postgres.sh start DIR PORT   # new cluster in DIR (created, or empty); prints the server's URL:
#                                        #   postgresql+asyncpg://prefect:<password>@127.0.0.1:PORT/prefect
#   scripts/postgres.sh stop DIR         # stops it (DIR stays; delete it to drop the data)
#
# Uses Debian's `postgresql` package (apt-get install postgresql): initdb and pg_ctl from
# /usr/lib/postgresql/<newest>/bin. PostgreSQL refuses to run as root, so as root the cluster belongs
# to the `postgres` user (the package creates it) and DIR is handed to that user. The log is DIR/postgres.log.
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }

bin_dir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z "$found" || ! -x "$found/initdb" ]]; then
    echo "PostgreSQL is not installed: expected initdb in /usr/lib/postgresql/<version>/bin" \
         "(Debian: apt-get install postgresql)" >&2
    exit 1
  fi
  echo "$found"
}

as_owner() {  # run a PostgreSQL binary as the cluster's owner
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  local dir=$1 port=$2 bin password
  [[ "$port" =~ ^[0-9]+$ ]] || { echo "PORT must be a number, got '$port'" >&2; exit 2; }
  bin=$(bin_dir)
  mkdir -p "$dir"
  if [[ -n "$(ls -A "$dir")" ]]; then
    echo "$dir is not empty: give a new folder for a throwaway cluster" >&2
    exit 1
  fi
  dir=$(cd "$dir" && pwd)
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || { echo "no 'postgres' user to run PostgreSQL as (root may not)" >&2; exit 1; }
    chown postgres: "$dir"
    runuser -u postgres -- test -w "$dir" || {
      echo "the postgres user cannot reach $dir: put it where every user may enter (e.g. under /tmp)" >&2
      exit 1
    }
  fi
  chmod 700 "$dir"
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf '%s\n' "$password" >"$dir/password")
  [[ $(id -u) -eq 0 ]] && chown postgres: "$dir/password"
  # The `prefect` superuser with a password for TCP (what the Prefect server uses); the socket in DIR
  # (no clash with a system cluster's /var/run/postgresql) trusts local users, for createdb below.
  as_owner "$bin/initdb" --pgdata="$dir/data" --username=prefect --pwfile="$dir/password" \
    --auth-host=scram-sha-256 --auth-local=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
  as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" --wait --timeout=60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir" start >/dev/null \
    || { echo "PostgreSQL did not start; its log:" >&2; tail -n 30 "$dir/postgres.log" >&2; exit 1; }
  as_owner "$bin/createdb" --host="$dir" --port="$port" --username=prefect prefect
  echo "postgresql+asyncpg://prefect:${password}@127.0.0.1:${port}/prefect"
}

stop() {
  local dir=$1 bin
  bin=$(bin_dir)
  [[ -f "$dir/data/postmaster.pid" ]] || return 0  # not running
  as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=fast --wait --timeout=60 stop >/dev/null
}

case "${1:-}" in
  start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
  stop) [[ $# -eq 2 ]] || usage; stop "$2" ;;
  *) usage ;;
esac
