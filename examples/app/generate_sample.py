"""Deterministic generator of the example app's SQLite database, awkward parts included:
NULL user references, JSON in TEXT, 0/1 booleans, timestamps as ISO text (space and T,
with Z) beside epoch seconds and milliseconds, a table named `user`.

    python examples/app/generate_sample.py examples/app/sample.db [--users N] [--jobs N]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3

DDL = """
CREATE TABLE user (
    id INTEGER NOT NULL PRIMARY KEY,
    username VARCHAR(64) NOT NULL UNIQUE,
    email VARCHAR(255) NOT NULL,
    hashed_password VARCHAR,
    full_name VARCHAR(255),
    role VARCHAR(32) NOT NULL DEFAULT 'user',
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE dataset (
    id INTEGER NOT NULL PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    owner_id INTEGER NOT NULL REFERENCES user (id),
    meta JSON,
    row_count INTEGER,
    size_bytes INTEGER,
    created_at DATETIME NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX ix_dataset_owner_id ON dataset (owner_id);
CREATE TABLE trainingjob (
    id INTEGER NOT NULL PRIMARY KEY,
    dataset_id INTEGER NOT NULL REFERENCES dataset (id),
    user_id INTEGER REFERENCES user (id),
    status VARCHAR(20) NOT NULL,
    hyperparams JSON,
    started_at DATETIME,
    finished_at DATETIME,
    accuracy FLOAT,
    is_archived BOOLEAN NOT NULL DEFAULT 0
);
CREATE INDEX ix_trainingjob_user_id ON trainingjob (user_id);
CREATE INDEX ix_trainingjob_status ON trainingjob (status, started_at);
CREATE TABLE modelartifact (
    id INTEGER NOT NULL PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES trainingjob (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    weights BLOB,
    sha256 VARCHAR(64),
    metrics JSON,
    created_at DATETIME NOT NULL
);
CREATE UNIQUE INDEX ux_modelartifact_job_name ON modelartifact (job_id, name);
"""

EPOCH0 = 1_672_531_200  # 2023-01-01T00:00:00Z
STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"]


def _ts(rng: random.Random, epoch: int) -> object:
    """The same instant in one of the shapes real apps leave behind."""
    import datetime as dt
    d = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=epoch)
    return rng.choice([
        d.strftime("%Y-%m-%d %H:%M:%S"),
        d.strftime("%Y-%m-%dT%H:%M:%S") + "Z",
        d.strftime("%Y-%m-%d %H:%M:%S.") + f"{rng.randrange(1000):03d}",
        epoch,
        epoch * 1000 + rng.randrange(1000),
    ])


def generate(path: str, users: int = 50, datasets: int = 200, jobs: int = 2000, seed: int = 42) -> None:
    rng = random.Random(seed)
    if os.path.exists(path):
        os.remove(path)
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    # user 1 is the app's admin, as the app's own migrations create it
    conn.executemany("INSERT INTO user VALUES (?,?,?,?,?,?,?,?)", [
        (i, f"user{i}" if i > 1 else "admin", f"user{i}@example.com", None,
         rng.choice(["Ada Lovelace", "Alan Turing", "Grace Hopper", "Émilie du Châtelet", "李雷", None]),
         "admin" if i == 1 else rng.choice(["user", "viewer"]), rng.choice([0, 1, 1, 1]),
         _ts(rng, EPOCH0 + i * 3600)) for i in range(1, users + 1)])
    conn.executemany("INSERT INTO dataset VALUES (?,?,?,?,?,?,?)", [
        (i, f"dataset-{i:04d}", rng.randint(1, users),
         json.dumps({"source": rng.choice(["s3", "gcs", "local"]), "tags": rng.sample(["a", "b", "c", "d"], 2),
                     "split": {"train": 0.8, "test": 0.2}}) if i % 7 else None,
         rng.randint(0, 10**7), rng.randint(0, 2**40), _ts(rng, EPOCH0 + 86400 + i * 600))
        for i in range(1, datasets + 1)])
    job_rows = []
    for i in range(1, jobs + 1):
        start = EPOCH0 + 2 * 86400 + i * 60
        status = rng.choice(STATUSES)
        job_rows.append((
            i, rng.randint(1, datasets), None if i % 10 == 0 else rng.randint(1, users), status,
            json.dumps({"lr": rng.choice([0.1, 0.01, 0.001, 3e-4]), "epochs": rng.randint(1, 100),
                        "batch_size": rng.choice([16, 32, 64])}),
            _ts(rng, start) if status != "queued" else None,
            _ts(rng, start + rng.randint(60, 7200)) if status in ("succeeded", "failed") else None,
            rng.random() if status == "succeeded" else None, rng.choice([0, 0, 0, 1])))
    conn.executemany("INSERT INTO trainingjob VALUES (?,?,?,?,?,?,?,?,?)", job_rows)
    art, n = [], 0
    for job in job_rows:
        if job[3] != "succeeded":
            continue
        for name in ("model.pt", "tokenizer.json")[: rng.randint(1, 2)]:
            n += 1
            weights = bytes(rng.randrange(256) for _ in range(64))
            art.append((n, job[0], name, weights, hashlib.sha256(weights).hexdigest(),
                        json.dumps({"accuracy": job[7], "loss": round(rng.random(), 6)}), _ts(rng, EPOCH0 + 9 * 86400 + n)))
    conn.executemany("INSERT INTO modelartifact VALUES (?,?,?,?,?,?,?)", art)
    conn.commit()
    conn.execute("VACUUM")
    conn.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--datasets", type=int, default=200)
    p.add_argument("--jobs", type=int, default=2000)
    a = p.parse_args()
    generate(a.path, a.users, a.datasets, a.jobs)
