"""The shipped deployment: the rendered Kubernetes overlays, the compose file and the
Dockerfile have the properties operators rely on. (CI also builds the image and runs
`docker compose run --rm migrate` end to end: see .ci/run.)"""
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT
from migrate.errors import EXIT_CODES

KUBECTL = shutil.which("kubectl")


def render(overlay):
    out = subprocess.run([KUBECTL, "kustomize", os.path.join(ROOT, "k8s", "overlays", overlay)],
                         capture_output=True, text=True, check=True).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}


@pytest.fixture(scope="module", params=["staging", "prod", "prod-shards"])
def overlay(request):
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize) is not installed on this machine")
    return request.param, render(request.param)


def job_of(docs):
    return next(d for (k, _), d in docs.items() if k == "Job")


def test_job_is_a_safe_one_shot(overlay):
    name, docs = overlay
    job = job_of(docs)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert 0 < spec["backoffLimit"] <= 3
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
    final = {c for c, _, _, retry in EXIT_CODES if not retry and c != 0}
    rule = next(r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "FailJob")
    assert set(rule["onExitCodes"]["values"]) == final  # exactly the codes that retrying cannot fix
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_credentials_from_a_secret_settings_from_a_configmap(overlay):
    name, docs = overlay
    pod = job_of(docs)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    cm_name = c["envFrom"][0]["configMapRef"]["name"]
    cm = docs[("ConfigMap", cm_name)]["data"]
    assert cm["MIGRATE_TARGET_PASSWORD_FILE"].startswith("/run/secrets/")
    assert not any("password" in k.lower() and not k.endswith("_FILE") for k in cm)
    assert not re.search(r"://[^@/]*:[^@/]*@", cm["MIGRATE_TARGET"])  # no password in the URL
    vols = {v["name"]: v for v in pod["volumes"]}
    assert "secret" in vols["secrets"] and "persistentVolumeClaim" in vols["data"]
    assert ("PersistentVolumeClaim", vols["data"]["persistentVolumeClaim"]["claimName"]) in docs
    if name.startswith("prod"):
        assert "sslmode=require" in cm["MIGRATE_TARGET"]
        assert not any(k == "Secret" for k, _ in docs)  # prod secrets come from outside the repo
    else:
        assert any(k == "StatefulSet" for k, _ in docs) and any(k == "Service" for k, _ in docs)
        sts = next(d for (k, _), d in docs.items() if k == "StatefulSet")
        env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        assert any(e.get("valueFrom", {}).get("secretKeyRef") for e in env)


def test_overlays_differ_visibly():
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize) is not installed on this machine")
    s, p = job_of(render("staging")), job_of(render("prod"))
    assert s["metadata"]["namespace"] != p["metadata"]["namespace"]
    assert s["metadata"]["name"] != p["metadata"]["name"]
    assert s["spec"]["activeDeadlineSeconds"] != p["spec"]["activeDeadlineSeconds"]
    assert s["spec"]["template"]["spec"]["containers"][0]["resources"] != \
        p["spec"]["template"]["spec"]["containers"][0]["resources"]


def test_the_sharded_overlay_is_an_indexed_job_whose_pods_share_one_run_id():
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize) is not installed on this machine")
    docs = render("prod-shards")
    job = job_of(docs)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 3
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["MIGRATE_SHARES"]["value"] == str(spec["completions"])  # one share per index
    # the Job's uid: the same for every pod of the Job and for a retried pod, new for the next Job
    assert env["MIGRATE_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    claim = job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert docs[("PersistentVolumeClaim", claim)]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert job["metadata"]["namespace"] == job_of(render("prod"))["metadata"]["namespace"]


def test_compose_file():
    doc = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))
    assert "name" not in doc and "include" not in doc  # compose v1.29 accepts it
    pg, mig = doc["services"]["postgres"], doc["services"]["migrate"]
    assert pg["image"].startswith("postgres:")
    assert "-h" in pg["healthcheck"]["test"] and "127.0.0.1" in pg["healthcheck"]["test"]
    assert any(v.startswith("pgdata:") for v in pg["volumes"]) and "pgdata" in doc["volumes"]
    assert mig["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mig["build"] == "."
    env = mig["environment"]
    assert env["MIGRATE_TARGET_PASSWORD_FILE"].startswith("/secrets/") and "POSTGRES_PASSWORD" not in pg["environment"]
    assert any(v.startswith("${MIGRATE_SOURCE_FILE:-") for v in mig["volumes"])


def test_dockerfile_and_entrypoint():
    df = open(os.path.join(ROOT, "Dockerfile")).read()
    assert re.search(r"^ARG PYTHON_IMAGE=", df, re.M) and df.count("FROM ${PYTHON_IMAGE}") == 2
    user = re.findall(r"^USER (\S+)", df, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert "ENTRYPOINT [\"/usr/local/bin/entrypoint.sh\"]" in df and re.search(r"^CMD \[", df, re.M)
    assert "org.opencontainers.image.title" in df
    assert not re.search(r"(gcc|build-essential|apt-get install)", df)
    ep = open(os.path.join(ROOT, "entrypoint.sh")).read().strip().splitlines()
    assert ep[-1] == 'exec python -m migrate "$@"' and len(ep) <= 10
