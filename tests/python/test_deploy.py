"""The container image and Kubernetes manifests agree with the binary: the
versions match, both overlays render, probes ask the health services the
binary serves, and pods outlive the shutdown Roster does on SIGTERM.
(.ci/run also validates the rendered overlays with kubernetes-validate.)"""

import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT


def duration_seconds(text):
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)", text).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60}[unit]


def workspace_version():
    return re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M)[1]


def render(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (.ci/run installs it)")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy/kubernetes/overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {(d["kind"], d["metadata"]["name"].split("-")[0] if d["kind"] == "Secret" else d["metadata"]["name"]): d
            for d in yaml.safe_load_all(out)}


def test_versions_agree():
    version = workspace_version()
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert re.search(r"^ARG VERSION=(\S+)$", dockerfile, re.M)[1] == version
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile
    assert re.search(r"^USER 65532", dockerfile, re.M)
    for overlay in ["dev", "production"]:
        deployment = render(overlay)[("Deployment", "roster")]
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.endswith(":" + version), image


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_pods_are_locked_down_and_outlive_the_shutdown(overlay):
    objects = render(overlay)
    config = objects[("ConfigMap", "roster-config")]["data"]
    pod = objects[("Deployment", "roster")]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    drain = duration_seconds(config["ROSTER_SHUTDOWN_GRACE"]) + duration_seconds(config["ROSTER_REQUEST_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > drain
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # Native gRPC probes, on the services the binary reports.
    assert container["readinessProbe"]["grpc"] == {"port": 50051}
    for probe in ["startupProbe", "livenessProbe"]:
        assert container[probe]["grpc"] == {"port": 50051, "service": "liveness"}
    ports = {p["name"]: p["port"] for p in objects[("Service", "roster")]["spec"]["ports"]}
    assert ports == {"grpc": 50051, "http": 8080}
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") for e in container["env"]}
    assert env["ROSTER_SECRET_KEYS"] == "roster-secrets" or env["ROSTER_SECRET_KEYS"].startswith("roster-secrets-")
    for kind in ["PodDisruptionBudget", "NetworkPolicy", "Service"]:
        assert (kind, "roster") in objects


def test_dev_is_one_sqlite_replica_and_production_three_on_postgres():
    dev = render("dev")
    deployment = dev[("Deployment", "roster")]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "roster-data"}}
    assert ("PersistentVolumeClaim", "roster-data") in dev
    assert ("HorizontalPodAutoscaler", "roster") not in dev
    assert ("Job", "roster-migrate") not in dev
    names = [e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "ROSTER_DATABASE_URL" not in names
    # SQLite migrates at start-up, search index included: ten minutes.
    startup = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 600
    assert startup["grpc"] == {"port": 50051, "service": "liveness"}

    production = render("production")
    deployment = production[("Deployment", "roster")]
    assert deployment["spec"]["replicas"] == 3
    assert production[("HorizontalPodAutoscaler", "roster")]["spec"]["minReplicas"] == 3
    for pod in [
        deployment["spec"]["template"]["spec"],
        production[("Job", "roster-migrate")]["spec"]["template"]["spec"],
    ]:
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["ROSTER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "roster-database", "key": "url"}
    assert not any(kind == "Secret" for kind, _ in production)
    # Every pod the autoscaler and a rollout's surge may run, at the most
    # connections each opens (1.5 × the setting + 1), fits PostgreSQL's
    # default max_connections of 100 with the migration Job's beside them.
    setting = int(production[("ConfigMap", "roster-config")]["data"]["ROSTER_DATABASE_MAX_CONNECTIONS"])
    pods = production[("HorizontalPodAutoscaler", "roster")]["spec"]["maxReplicas"] + int(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    )
    assert (pods + 1) * (setting * 3 // 2 + 1) <= 100
