#!/usr/bin/env bash
# psql -> inlet (Alice's sidecar) -> hub -> outlet (Bob's sidecar, no open port) -> PostgreSQL.
# PostgreSQL (Debian's postgresql package) runs from a temp dir as an unprivileged user; all of
# it on loopback, stopped at the end.
#   examples/portal/psql.sh [BUILD_DIR]
set -euo pipefail
build="$(cd "${1:-build}" && pwd)" work="$(mktemp -d)" && chmod 755 "$work"
pg="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg=() && if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi   # PostgreSQL refuses root
trap '"${as_pg[@]}" "$pg/pg_ctl" -D "$work/db" -m immediate stop >/dev/null 2>&1; kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
source "$(dirname "$0")/nodes.sh"

pg_port=$(port) inlet_port=$(port)
mkdir "$work/db" "$work/pgsock" && { [ ${#as_pg[@]} -eq 0 ] || chown postgres "$work/db" "$work/pgsock"; }
"${as_pg[@]}" "$pg/initdb" -D "$work/db" -A trust -U bob --no-sync >/dev/null
"${as_pg[@]}" "$pg/pg_ctl" -D "$work/db" -w -l "$work/db/log" \
  -o "-p $pg_port -k $work/pgsock -c listen_addresses=127.0.0.1" start >/dev/null
bob outlet create postgres --to "127.0.0.1:$pg_port" --trust "$(identifier_of alice)"  # only Alice
alice inlet create "127.0.0.1:$inlet_port" "$route" --outlet postgres --trust "$(identifier_of bob)"

psql -X -h 127.0.0.1 -p "$inlet_port" -U bob -d postgres -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE greetings (id serial PRIMARY KEY, text text);
INSERT INTO greetings (text) VALUES ('Hello Ockam!'), ('through a portal');
SELECT id, text FROM greetings ORDER BY id;
SQL
alice inlet list
