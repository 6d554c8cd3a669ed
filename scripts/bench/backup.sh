#!/usr/bin/env bash
# Backup and restore of the full catalogue: imports it into a fresh database, then
# times `castwork backup` (unencrypted and encrypted) and `castwork restore` of each
# archive into another fresh database, with peak resident memory; the import's
# own time is printed for scale.
# Usage: scripts/bench/backup.sh sqlite|postgres [rounds]
# Builds into $CARGO_TARGET_DIR when it is set (else target/); BIN=path runs that
# binary instead, without building.
# Method and numbers: docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
backend=${1:-sqlite}
rounds=${2:-3}
catalog=${CATALOG:-assets/arxiv/catalog.jsonl.gz}
work=$(mktemp -d /tmp/castwork-bench-backup.XXXXXX)
prefix=castwork_bench_backup_$$_
cleanup() {
    if [ "$backend" = postgres ]; then
        for db in $(psql -h 127.0.0.1 -U postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE '${prefix}%'" postgres); do
            psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" postgres
        done
    fi
    rm -rf "$work"
}
trap cleanup EXIT
export CASTWORK_LOG__LEVEL=warn CASTWORK_BACKUP__KEEP=0
if [ -z "${BIN:-}" ]; then
    cargo build --release -q
fi
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/castwork}

# A fresh database for the data directory $1: a SQLite file there, or a new PostgreSQL database.
fresh() {
    mkdir -p "$1"
    if [ "$backend" = postgres ]; then
        local db
        db=$prefix$(basename "$1" | tr -c 'a-z0-9\n' '_')
        psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" postgres
        echo "postgres://postgres@127.0.0.1:5432/$db"
    else
        echo ""
    fi
}

# Runs castwork on data directory $1 and database URL $2; prints "seconds peak_kib".
timed() {
    local dir=$1 url=$2
    shift 2
    local start end
    start=$(date +%s.%N)
    CASTWORK_DATA_DIR=$dir CASTWORK_DATABASE__URL=$url /usr/bin/time -f "%M" -o "$work/rss" "$bin" "$@" >"$work/out" 2>"$work/err" \
        || { cat "$work/err" >&2; exit 1; }
    end=$(date +%s.%N)
    echo "$(echo "$end - $start" | bc) $(cat "$work/rss")"
}

source_url=$(fresh "$work/source")
imported=$(timed "$work/source" "$source_url" import "$catalog")
echo "backend=$backend catalogue=$catalog rounds=$rounds"
echo "import (for scale): ${imported% *} s (peak ${imported#* } KiB)"
for mode in plain encrypted; do
    key=""
    [ "$mode" = encrypted ] && key=bench-backup-key-0123456789abcdef0123456789
    for round in $(seq 1 "$rounds"); do
        rm -rf "$work/source/backups"
        made=$(CASTWORK_BACKUP__ENCRYPTION_KEY=$key timed "$work/source" "$source_url" backup)
        archive=$(sed -n 's/^backup written: //p' "$work/out")
        size=$(stat -c %s "$archive")
        target_url=$(fresh "$work/target-$mode-$round")
        restored=$(CASTWORK_BACKUP__ENCRYPTION_KEY=$key timed "$work/target-$mode-$round" "$target_url" restore "$archive")
        rows=$(awk '/rows in/ {print $1}' "$work/out")
        echo "$mode round $round: backup ${made% *} s (peak ${made#* } KiB), archive $size bytes; restore ${restored% *} s (peak ${restored#* } KiB), $rows rows"
        rm -rf "$work/target-$mode-$round"
    done
done
