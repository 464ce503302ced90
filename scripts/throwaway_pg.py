"""A throwaway PostgreSQL for tests, the demo and the benchmark.

Order of preference: MIGRATE_TEST_DATABASE_URL (an existing server, admin URL);
else a private cluster from the local PostgreSQL binaries (initdb as the
`postgres` OS user when we are root: initdb refuses root), listening on
127.0.0.1 only, on a free port, with a random password (scram-sha-256).

    python scripts/throwaway_pg.py start DIR   -> prints the admin URL (no password) and
                                                  writes the password to DIR/password
    python scripts/throwaway_pg.py stop DIR
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time


def _bindir() -> str | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


class Cluster:
    def __init__(self, base: str):
        self.base = os.path.abspath(base)
        self.data = os.path.join(self.base, "data")
        self.owner = "postgres" if os.geteuid() == 0 else None
        self.bindir = _bindir()
        self.port = None
        self.password = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "Cluster":
        if self.bindir is None:
            raise RuntimeError("no PostgreSQL binaries (initdb) found; install postgresql "
                               "or set MIGRATE_TEST_DATABASE_URL")
        os.makedirs(self.base, exist_ok=True)
        self.password = secrets.token_urlsafe(18)
        pwfile = os.path.join(self.base, "password")
        with open(pwfile, "w") as f:
            f.write(self.password)
        os.chmod(pwfile, 0o600)
        if self.owner:
            subprocess.run(["chown", "-R", self.owner, self.base], check=True)
        subprocess.run(_as_owner([f"{self.bindir}/initdb", "-D", self.data, "-U", "postgres", f"--pwfile={pwfile}",
                                  "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], self.owner),
                       check=True, stdout=subprocess.DEVNULL)
        self.port = _free_port()
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(_as_owner([f"{self.bindir}/pg_ctl", "-D", self.data, "-l", os.path.join(self.base, "log"),
                                  "-o", opts, "-w", "start"], self.owner), check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.base, "port"), "w") as f:
            f.write(str(self.port))
        return self

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(_as_owner([f"{self.bindir}/pg_ctl", "-D", self.data, *args], self.owner), check=True,
                       stdout=subprocess.DEVNULL)

    def restart(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "restart")

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self.pg_ctl("-m", "immediate", "-w", "stop")


def main() -> int:
    cmd, base = sys.argv[1], sys.argv[2]
    c = Cluster(base)
    if cmd == "start":
        c.start()
        print(c.url)
    elif cmd == "stop":
        c.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
