#!/usr/bin/env bash
# PostgreSQL for the fleet tests (tests/store, tests/fleet): the contract suite runs on a real server.
# Installs Debian's postgresql if missing, starts the cluster if it is not running, and makes sure
# `postgres` can connect over 127.0.0.1 without a password (CI machines only: trust on loopback).
# Tests create (and drop) their own database per session. Idempotent; a second run takes well under 1 s.
set -euo pipefail

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 1 50); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.2
done

if ! psql -w -h 127.0.0.1 -U postgres -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    sleep 0.5
fi
psql -w -h 127.0.0.1 -U postgres -d postgres -Atc 'SELECT 1' >/dev/null
echo "PostgreSQL $version is up on 127.0.0.1:5432"
