"""`make up` with RECLOOP_DB_URL naming a database that does not exist: the stack's two
databases are created from the server's `postgres` database, on the real local PostgreSQL
(skipped when none answers on 127.0.0.1:5432). Everything created here is dropped."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from flows import stack

PG = os.environ.get("RECLOOP_E2E_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _query(sql: str, *args):
    import asyncpg

    async def go():
        conn = await asyncpg.connect(PG, timeout=5)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture()
def base():
    try:
        _query("SELECT 1")
    except (OSError, TimeoutError, Exception) as exc:  # asyncpg raises its own types too
        pytest.skip(f"no PostgreSQL at {PG}: {exc}")
    name = f"recloop_t_{uuid.uuid4().hex[:8]}"
    yield name
    for db in (name, f"{name}_prefect", f"{name}_mlflow"):
        _query(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _existing(prefix: str) -> set[str]:
    return {r["datname"] for r in _query("SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%")}


def test_databases_are_created_although_the_named_one_does_not_exist(base, tmp_path: Path):
    host = PG.rsplit("/", 1)[0]
    cfg = stack.StackConfig(home=tmp_path, db_url=f"{host}/{base}")
    assert _existing(base) == set()
    assert sorted(stack.ensure_databases(cfg)) == [f"{base}_mlflow", f"{base}_prefect"]
    assert _existing(base) == {f"{base}_prefect", f"{base}_mlflow"}  # and not `base` itself
    assert stack.ensure_databases(cfg) == []  # a second `make up` creates nothing


def test_an_unreachable_server_is_one_error_naming_the_databases(tmp_path: Path):
    cfg = stack.StackConfig(home=tmp_path, db_url="postgresql://postgres@127.0.0.1:1/opscheck")
    with pytest.raises(stack.StackError, match=r"cannot prepare databases \['opscheck_prefect', 'opscheck_mlflow'\]"):
        stack.ensure_databases(cfg)
