#!/usr/bin/env bash
# Start the local PostgreSQL cluster when it is installed but down. The test suite itself decides
# what a missing PostgreSQL means (a failure under CI=true, a loud notice elsewhere).
set -u
host=${REGISTRY_TEST_PG_HOST:-127.0.0.1}
port=${REGISTRY_TEST_PG_PORT:-5432}
if command -v pg_isready >/dev/null && pg_isready -q -h "$host" -p "$port"; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "PostgreSQL $version is installed but not answering; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    pg_isready -q -h "$host" -p "$port" && exit 0
    sleep 1
  done
  echo "PostgreSQL did not come up on $host:$port"
else
  echo "PostgreSQL is not installed here"
fi
if [ "${CI:-}" = "true" ]; then
  echo "CI=true: the suite must run on PostgreSQL too; failing"
  exit 1
fi
exit 0
