"""Fixtures: a real throwaway PostgreSQL (no mocks), fresh databases, SQLite files."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid

import psycopg2
import pytest
import sqlalchemy as sa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from throwaway_pg import Cluster  # noqa: E402

REALDB = os.path.join(ROOT, "..", "shared", "realdb")


class Server:
    """Admin access to the test server: URL without password + password apart."""

    def __init__(self, url: str, password: str | None, cluster: Cluster | None):
        self.url, self.password, self.cluster = url, password, cluster

    def connect(self, dbname: str = "postgres"):
        u = sa.engine.make_url(self.url).set(database=dbname)
        return psycopg2.connect(host=u.host, port=u.port, user=u.username, dbname=dbname,
                                password=self.password or u.password)

    def db_url(self, dbname: str) -> str:
        return sa.engine.make_url(self.url).set(database=dbname, password=None).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server():
    url = os.environ.get("MIGRATE_TEST_DATABASE_URL")
    if url:
        yield Server(url, sa.engine.make_url(url).password, None)
        return
    base = tempfile.mkdtemp(prefix="migrate-pg-")
    cluster = Cluster(base).start()
    try:
        yield Server(cluster.url, cluster.password, cluster)
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pgdb(server):
    """A fresh, empty database; yields its URL (password not in it)."""
    name = "t_" + uuid.uuid4().hex[:12]
    conn = server.connect()
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    conn.close()
    yield server.db_url(name)
    conn = server.connect()
    conn.autocommit = True
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def env(server):
    """Environment for running the CLI: the password only in the environment."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATE_")}
    e["MIGRATE_TARGET_PASSWORD"] = server.password or ""
    e["PYTHONPATH"] = ROOT
    return e


def run_cli(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrate", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(env):
    return lambda *args, **kw: run_cli(list(args), {**env, **kw.pop("extra_env", {})}, **kw)


@pytest.fixture
def make_sqlite(tmp_path):
    """make_sqlite(sql_script, name='src.db') -> path of a real SQLite file."""
    def make(script: str, name: str = "src.db", params: list | None = None) -> str:
        path = str(tmp_path / name)
        conn = sqlite3.connect(path)
        conn.executescript(script)
        for sql, rows in params or []:
            conn.executemany(sql, rows)
        conn.commit()
        conn.close()
        return path
    return make


def pg_connect(server: Server, url: str):
    return server.connect(sa.engine.make_url(url).database)


def sql(server: Server, url: str, query: str, *params):
    """Run one statement in the database at url (autocommit); rows, or None."""
    conn = pg_connect(server, url)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(query, params)
    out = cur.fetchall() if cur.description else None
    conn.close()
    return out
