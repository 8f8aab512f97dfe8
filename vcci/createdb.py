"""Create the PostgreSQL database named in DATABASE_URL if it does not exist yet.

``python -m vcci.createdb [--check-redis]`` exits non-zero with a clear message when
PostgreSQL (or, with ``--check-redis``, Redis at REDIS_URL) cannot be reached.
"""

from __future__ import annotations

import os
import sys

import environ
import psycopg
from psycopg import sql


def ensure_database(url: str) -> str:
    config = environ.Env.db_url_config(url)
    name = config["NAME"]
    with psycopg.connect(
        host=config.get("HOST") or "127.0.0.1",
        port=config.get("PORT") or 5432,
        user=config.get("USER") or "postgres",
        password=config.get("PASSWORD") or None,
        dbname="postgres",
        connect_timeout=5,
        autocommit=True,
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            return f"database {name} exists"
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"database {name} created"


def check_redis(url: str) -> str:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    return f"redis reachable at {url}"


def main(argv: list[str]) -> int:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        try:
            print(ensure_database(url))
        except psycopg.Error as exc:
            print(f"PostgreSQL is unreachable for {url}: {exc}", file=sys.stderr)
            return 2
    else:
        print("DATABASE_URL is not a PostgreSQL URL; nothing to create.")
    if "--check-redis" in argv:
        try:
            print(check_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")))
        except Exception as exc:
            print(f"Redis is unreachable: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
