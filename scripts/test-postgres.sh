#!/usr/bin/env bash
# Starts Debian's PostgreSQL cluster and creates the test role and database; prints the URL to use.
# Used by .ci/run, and by developers who want the store suite to run against PostgreSQL too.
set -euo pipefail
version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main >&2
fi
pg_ctlcluster "$version" main start >&2 2>/dev/null || true
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.2
done
su postgres -c "psql -q -h 127.0.0.1 -p 5432 -c \"do \\\$\\\$ begin if not exists (select from pg_roles where rolname = 'berth') then create role berth login superuser password 'berth'; end if; end \\\$\\\$;\"" >/dev/null 2>&1 ||
  su postgres -c "psql -q -c \"do \\\$\\\$ begin if not exists (select from pg_roles where rolname = 'berth') then create role berth login superuser password 'berth'; end if; end \\\$\\\$;\"" >/dev/null
su postgres -c "psql -q -tc \"select 1 from pg_database where datname = 'berth_test'\"" | grep -q 1 ||
  su postgres -c "createdb -O berth berth_test"
echo "postgres://berth:berth@127.0.0.1:5432/berth_test"
