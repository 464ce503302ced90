"""The benchmark, one command:  V/bin/python bench/run.py --rows 2200000

Generates (or reuses) the deterministic app-like DB, starts a throwaway PostgreSQL,
then measures, each in its own process and on a settled server (see settle): the ceiling (bench/ceiling.py), and migrate's
backup, restore (from that backup into a fresh database) and the whole run. Prints
seconds per phase (from the STEP log lines), rows/s, peak memory of each process tree (PSS, workers included), and
the ratios against the ceiling. Nothing here is asserted: it prints figures.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, HERE)
from generate import generate  # noqa: E402
from throwaway_pg import Cluster  # noqa: E402


def tree_rss_kib(pid: int) -> int:
    """Memory of a process and all its descendants (the load's worker processes): the sum
    of their PSS (/proc/PID/smaps_rollup), in which a page a forked worker still shares
    with its parent counts once, as the container's memory limit counts it."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return total


DATABASES = ("ceiling", "restore", "run", "restore1", "shares")


def settle(cluster) -> None:
    """Start each measurement on a quiet machine, as the first one (the ceiling) does. A
    load leaves work behind: autovacuum visits the freshly loaded tables within a minute
    (insert threshold) and the checkpointer writes their pages out; unchecked, that work
    lands in whatever is measured next. So before each measurement: VACUUM every bench
    database (what autovacuum would do; instant on an empty one), CHECKPOINT, sync."""
    import psycopg2
    for name in DATABASES + ("postgres",):  # the checkpoint last
        conn = psycopg2.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                                dbname=name)
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("VACUUM")
        if name == "postgres":
            cur.execute("CHECKPOINT")
        conn.close()
    os.sync()


def measure(cmd: list[str], env: dict) -> tuple[float, float, str, int]:
    """(seconds, peak memory MiB of the process tree (PSS, sampled every 100 ms: more often, reading
    /proc/PID/smaps_rollup of every worker slowed the measured run by ~0.5 s), output,
    exit code) of one command."""
    s, peaks, outs, codes = measure_at_once([cmd], env)
    return s, peaks[0], outs[0], codes[0]


def measure_at_once(cmds: list[list[str]], env: dict) -> tuple[float, list[float], list[str], list[int]]:
    """Commands started together (the pods of an Indexed Job): (seconds until the last one
    ends, each one's peak memory MiB, outputs, exit codes)."""
    import threading
    outs = [tempfile.TemporaryFile("w+") for _ in cmds]
    t0 = time.monotonic()
    procs = [subprocess.Popen(c, env=env, cwd=ROOT, stdout=o, stderr=subprocess.STDOUT, text=True)
             for c, o in zip(cmds, outs)]
    peak = [0] * len(procs)
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            for i, p in enumerate(procs):
                peak[i] = max(peak[i], tree_rss_kib(p.pid))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    codes = []
    for i, p in enumerate(procs):
        _, status, usage = os.wait4(p.pid, 0)
        peak[i] = peak[i] or usage.ru_maxrss
        codes.append(os.waitstatus_to_exitcode(status))
    done.set()
    sampler.join()
    seconds = time.monotonic() - t0
    texts = []
    for o in outs:
        o.seek(0)
        texts.append(o.read())
        o.close()
    return seconds, [k / 1024 for k in peak], texts, codes


def phases(log: str) -> dict[str, float]:
    """Seconds per STEP from the JSON log lines."""
    marks = []
    for line in log.splitlines():
        if line.startswith("{"):
            e = json.loads(line)
            if e["event"].startswith("STEP "):
                marks.append((e["event"].split(" ", 2)[2], dt.datetime.fromisoformat(e["timestamp"])))
            end = dt.datetime.fromisoformat(e["timestamp"])
    out = {}
    for (name, t), (_, t2) in zip(marks, marks[1:] + [("end", end)]):
        out[name] = (t2 - t).total_seconds()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_200_000)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "migrate-bench"))
    ap.add_argument("--shares", type=int, default=2, help="also run --shares N: N processes at once on this "
                                                          "one machine, --workers 1 each (0: skip)")
    a = ap.parse_args()
    os.makedirs(a.cache, exist_ok=True)
    db = os.path.join(a.cache, f"app-{a.rows}.db")
    if not os.path.exists(db):
        generate(db, a.rows)
    base = tempfile.mkdtemp(prefix="migrate-bench-pg-")
    os.chmod(base, 0o755)
    cluster = Cluster(base).start()
    work = tempfile.mkdtemp(prefix="migrate-bench-")
    try:
        import psycopg2
        admin = psycopg2.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=cluster.password,
                                 dbname="postgres")
        admin.autocommit = True
        for name in DATABASES:
            admin.cursor().execute(f"CREATE DATABASE {name}")
        admin.close()
        url = lambda name: f"postgresql://postgres@127.0.0.1:{cluster.port}/{name}"  # noqa: E731
        env = {**os.environ, "PGPASSWORD": cluster.password, "MIGRATE_TARGET_PASSWORD": cluster.password,
               "MIGRATE_LOG_FORMAT": "json", "MIGRATE_PROGRESS": "off", "PYTHONPATH": ROOT}
        import sqlite3
        rows = sum(sqlite3.connect(db).execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                   for t in ("user", "dataset", "trainingjob", "modelartifact"))
        py = sys.executable
        results = {}
        settle(cluster)
        s, m, log, rc = measure([py, os.path.join(HERE, "ceiling.py"), db, url("ceiling")], env)
        results["ceiling"] = (s, m, rc, {})
        settle(cluster)
        s, m, log, rc = measure([py, "-m", "migrate", "backup", "--source", db, "--backup-dir",
                                 os.path.join(work, "b1")], env)
        results["backup"] = (s, m, rc, phases(log))
        settle(cluster)
        s, m, log, rc = measure([py, "-m", "migrate", "restore", "--backup-dir", os.path.join(work, "b1"),
                                 "--target", url("restore")], env)
        results["restore"] = (s, m, rc, phases(log))
        settle(cluster)
        s, m, log, rc = measure([py, "-m", "migrate", "run", "--source", db, "--backup-dir",
                                 os.path.join(work, "b2"), "--target", url("run")], env)
        results["run"] = (s, m, rc, phases(log))
        backup_mb = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(work, "b2"))
                        for f in fs) / 2**20
        settle(cluster)
        s, m, log, rc = measure([py, "-m", "migrate", "restore", "--backup-dir", os.path.join(work, "b1"),
                                 "--target", url("restore1"), "--workers", "1"], env)
        results["restore --workers 1"] = (s, m, rc, phases(log))
        settle(cluster)
        s, m, log, rc = measure([py, "-m", "migrate", "backup", "--source", db, "--backup-dir",
                                 os.path.join(work, "b3"), "--backup-compress", "gzip"], env)
        results["backup --backup-compress gzip"] = (s, m, rc, {})
        gzip_mb = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(work, "b3"))
                      for f in fs) / 2**20
        if a.shares > 1:
            settle(cluster)
            s, peaks, logs, codes = measure_at_once(
                [[py, "-m", "migrate", "run", "--source", db, "--backup-dir", os.path.join(work, "b4"),
                  "--target", url("shares"), "--shares", str(a.shares), "--share-index", str(i),
                  "--run-id", "bench", "--workers", "1"] for i in range(a.shares)], env)
            results[f"run --shares {a.shares} (one machine)"] = (s, max(peaks), max(codes), {})
            for i, (log, peak) in enumerate(zip(logs, peaks)):
                ph = phases(log)
                results[f"  share {i}"] = (sum(ph.values()), peak, codes[i], ph)
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    ceiling = results["ceiling"][0]
    print(f"\nmigrate benchmark: {rows:,} rows ({os.path.getsize(db) / 2**20:.0f} MiB SQLite), "
          f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
          f"PostgreSQL from {cluster.bindir}")
    print(f"{'what':<34}{'seconds':>9}{'rows/s':>11}{'peak mem':>11}{'vs ceiling':>12}  exit")
    for name, (s, m, rc, ph) in results.items():
        if name.startswith("  share"):  # a part of the rows: no rows/s or ratio of its own
            print(f"{name:<34}{s:>9.2f}{'':>11}{m:>8.0f} MiB{'':>12}  {rc}")
        else:
            print(f"{name:<34}{s:>9.2f}{rows / s:>11,.0f}{m:>8.0f} MiB{ceiling / s:>11.2f}x  {rc}")
        for step, sec in ph.items():
            if sec >= 0.05:
                print(f"  {step:<32}{sec:>9.2f}")
    r = results["restore"][3]
    restore_core = r.get("restore", 0) + r.get("post-data", 0)
    print(f"\nrestore alone (load + keys, the phases the ceiling also does): {restore_core:.2f} s = "
          f"{ceiling / restore_core:.2f}x the ceiling's throughput" if restore_core else "")
    print(f"whole run (backup + restore + verify): {results['run'][0]:.2f} s = {ceiling / results['run'][0]:.2f}x")
    print(f"backup size: {backup_mb:.0f} MiB of JSON Lines, {gzip_mb:.0f} MiB with gzip "
          f"(source {os.path.getsize(db) / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
