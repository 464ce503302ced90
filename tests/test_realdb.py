"""`run` on every real database in ../shared/realdb leaves a target identical to the
source: confirmed by migrate's verify and by the independent check."""
import glob
import json
import os
import shutil

import pytest

from conftest import REALDB
from independent import compare

DBS = sorted(glob.glob(os.path.join(REALDB, "*", "*.sqlite")))


@pytest.mark.skipif(not DBS, reason="../shared/realdb is not beside this checkout")
@pytest.mark.parametrize("db", DBS, ids=[os.path.basename(os.path.dirname(p)) for p in DBS])
def test_run_realdb(db, tmp_path, pgdb, cli, server):
    src = str(tmp_path / "source file.sqlite")  # a scratch copy, with a space in its path
    shutil.copy(db, src)
    report = tmp_path / "report.json"
    r = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "backup"),
            "--report", str(report))
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(report.read_text())
    assert rep["status"] == "ok" and all(t["verdict"] == "ok" for t in rep["tables"])
    assert rep["totals"]["source_rows"] == rep["totals"]["target_rows"] > 0
    assert compare(src, pgdb, server.password) == []
    # the verify command agrees, from the source and from the backup alone
    assert cli("verify", "--source", src, "--target", pgdb).returncode == 0
    os.remove(src)
    v = cli("verify", "--backup-dir", str(tmp_path / "backup"), "--target", pgdb)
    assert v.returncode == 0, v.stdout + v.stderr
    # a second run converges: same target, exit 0
    shutil.copy(db, src)
    r2 = cli("run", "--source", src, "--target", pgdb, "--backup-dir", str(tmp_path / "backup"))
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert compare(src, pgdb, server.password) == []
