"""The ceiling: the fastest plain path from SQLite into PostgreSQL, for comparison.
psycopg2 COPY streamed straight from a sqlite3 cursor (values formatted with str(),
text escaped), tables without constraints, then primary keys, indexes and foreign keys
built after the load. No backup, no type conversion, no verification.

    python bench/ceiling.py SOURCE.db POSTGRES_URL   (password: PGPASSWORD)
"""
from __future__ import annotations

import sqlite3
import sys
import time

import psycopg2

ESC = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
PG = {"INTEGER": "bigint", "BOOLEAN": "bigint", "FLOAT": "double precision", "BLOB": "bytea"}


def field(v) -> str:
    if v is None:
        return "\\N"
    if type(v) is str:
        return v.translate(ESC)
    if type(v) is bytes:
        return "\\\\x" + v.hex()
    return str(v)


class Stream:
    def __init__(self, cur):
        self.cur = cur

    def read(self, _n=-1):
        rows = self.cur.fetchmany(5000)
        if not rows:
            return b""
        return ("\n".join("\t".join(map(field, r)) for r in rows) + "\n").encode()


def main(src: str, url: str) -> None:
    s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    pg = psycopg2.connect(url)
    cur = pg.cursor()
    tables = [r[0] for r in s.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY rowid")]
    t0 = time.monotonic()
    rows = 0
    for t in tables:
        cols = s.execute(f'PRAGMA table_info("{t}")').fetchall()
        defs = ", ".join(f'"{c[1]}" {PG.get(c[2].split("(")[0].upper(), "text")}' for c in cols)
        cur.execute(f'DROP TABLE IF EXISTS "{t}" CASCADE; CREATE TABLE "{t}" ({defs})')
        cur.copy_expert(f'COPY "{t}" FROM STDIN', Stream(s.execute(f'SELECT * FROM "{t}"')), size=1 << 16)
        rows += s.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        pg.commit()
    load = time.monotonic() - t0
    for t in tables:
        cur.execute(f'ALTER TABLE "{t}" ADD PRIMARY KEY (id)')
    cur.execute('CREATE INDEX ON trainingjob (user_id)')
    for child, col, parent in [("dataset", "owner_id", "user"), ("trainingjob", "dataset_id", "dataset"),
                               ("trainingjob", "user_id", "user"), ("modelartifact", "job_id", "trainingjob")]:
        cur.execute(f'ALTER TABLE "{child}" ADD FOREIGN KEY ("{col}") REFERENCES "{parent}" (id)')
    pg.commit()
    total = time.monotonic() - t0
    print(f"ceiling: {rows} rows, load {load:.2f} s, with keys {total:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
