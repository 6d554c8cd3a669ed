#!/usr/bin/env bash
# Starts PostgreSQL, Redis and RabbitMQ on 127.0.0.1 when they are installed
# but not running, and waits until each answers. Services that are not
# installed are reported and skipped.
set -uo pipefail

wait_for() { # name, command...
    local name=$1; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then echo "services: $name is up"; return 0; fi
        sleep 1
    done
    echo "services: $name did not come up" >&2
    return 1
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432; }
if command -v pg_isready >/dev/null 2>&1; then
    if ! pg_up >/dev/null 2>&1; then
        echo "services: starting PostgreSQL"
        for version in $(ls /etc/postgresql 2>/dev/null); do
            pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        done
    fi
    wait_for postgresql pg_up || exit 1
else
    echo "services: PostgreSQL is not installed" >&2
fi

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }
if command -v redis-server >/dev/null 2>&1; then
    if ! redis_up >/dev/null 2>&1; then
        echo "services: starting Redis"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    fi
    wait_for redis redis_up || exit 1
fi

rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if command -v rabbitmq-server >/dev/null 2>&1; then
    if ! rabbit_up; then
        echo "services: starting RabbitMQ"
        rabbitmq-server -detached || true
    fi
    wait_for rabbitmq rabbit_up || exit 1
fi
exit 0
