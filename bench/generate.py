"""Deterministic app-like SQLite database of about N rows, generated inside SQLite
(recursive CTEs, no randomness): users, datasets, training jobs (JSON text, text and
epoch timestamps, NULL user references, reals, 0/1 booleans), artifacts (BLOBs).

    python bench/generate.py OUT.db --rows 2200000
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import time

SCHEMA = """
CREATE TABLE user (id INTEGER PRIMARY KEY, username VARCHAR(64) NOT NULL UNIQUE, email VARCHAR(255) NOT NULL,
                   full_name VARCHAR(255), is_active BOOLEAN NOT NULL, created_at DATETIME NOT NULL);
CREATE TABLE dataset (id INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, owner_id INTEGER NOT NULL REFERENCES user(id),
                      meta JSON, row_count INTEGER, created_at DATETIME NOT NULL);
CREATE TABLE trainingjob (id INTEGER PRIMARY KEY, dataset_id INTEGER NOT NULL REFERENCES dataset(id),
                          user_id INTEGER REFERENCES user(id), status VARCHAR(20) NOT NULL, hyperparams JSON,
                          started_at DATETIME, accuracy FLOAT, is_archived BOOLEAN NOT NULL);
CREATE INDEX ix_trainingjob_user ON trainingjob(user_id);
CREATE TABLE modelartifact (id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL REFERENCES trainingjob(id),
                            name TEXT NOT NULL, weights BLOB, metrics JSON, created_at DATETIME NOT NULL);
"""


def generate(path: str, rows: int) -> dict:
    users, datasets = max(rows // 100, 10), max(rows // 20, 10)
    jobs = max(rows * 6 // 10, 10)
    artifacts = max(rows - users - datasets - jobs, 10)
    if os.path.exists(path):
        os.remove(path)
    conn = sqlite3.connect(path)
    conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
    seq = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
    conn.execute(seq + "INSERT INTO user SELECT i, 'user' || i, 'user' || i || '@example.com', "
                 "CASE WHEN i % 7 = 0 THEN NULL ELSE 'Name ' || (i * 31 % 997) END, i % 4 <> 0, "
                 "datetime(1672531200 + i * 60, 'unixepoch') FROM s", (users,))
    conn.execute(seq + "INSERT INTO dataset SELECT i, 'dataset-' || i, 1 + (i * 7919) % ?, "
                 "CASE WHEN i % 9 = 0 THEN NULL ELSE json_object('source', 's3', 'split', 0.8, 'n', i) END, "
                 "i * 1000 % 9999991, strftime('%Y-%m-%dT%H:%M:%SZ', 1672531200 + i * 30, 'unixepoch') FROM s",
                 (datasets, users))
    conn.execute(seq + "INSERT INTO trainingjob SELECT i, 1 + (i * 104729) % ?, "
                 "CASE WHEN i % 10 = 0 THEN NULL ELSE 1 + (i * 7919) % ? END, "
                 "CASE i % 4 WHEN 0 THEN 'queued' WHEN 1 THEN 'running' WHEN 2 THEN 'succeeded' ELSE 'failed' END, "
                 "json_object('lr', 0.001 * (1 + i % 10), 'epochs', i % 100, 'batch', 32), "
                 "CASE i % 3 WHEN 0 THEN NULL WHEN 1 THEN datetime(1680000000 + i, 'unixepoch') "
                 "ELSE 1680000000 + i END, CASE WHEN i % 4 = 2 THEN (i % 1000) / 1000.0 + 0.0001 END, "
                 "i % 5 = 0 FROM s", (jobs, datasets, users))
    conn.execute(seq + "INSERT INTO modelartifact SELECT i, 1 + (i * 15485863) % ?, 'model-' || i || '.pt', "
                 "CAST(printf('%08x%024d', i * 2654435761 % 4294967296, i) AS BLOB), json_object('loss', (i % 997) / 997.0), "
                 "datetime(1690000000 + i, 'unixepoch') FROM s", (artifacts, jobs))
    conn.commit()
    conn.close()
    return {"user": users, "dataset": datasets, "trainingjob": jobs, "modelartifact": artifacts}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--rows", type=int, default=2_200_000)
    a = p.parse_args()
    t0 = time.monotonic()
    counts = generate(a.out, a.rows)
    print(f"{a.out}: {sum(counts.values()):,} rows {counts} in {time.monotonic() - t0:.1f} s")
