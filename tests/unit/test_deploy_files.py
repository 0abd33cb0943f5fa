"""deploy/docker-compose.yml stays valid for users with Docker (no engine runs here), and the
set-up scripts stop what they started when the set-up fails. The scripts run for real; the
scripts they call are stand-ins that record the calls, so no broker or server starts here.

The image, the Kubernetes manifests (deploy/k8s/) and the Grafana dashboard
(deploy/grafana/) agree with the code: the commands are loyalty's, the variables are read,
the image is the Dockerfile's, the dashboard queries only the metrics the processes expose."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_the_whole_system_with_the_contract_environment() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "worker", "projector", "api"} <= set(services)
    for name in ("worker", "projector", "api"):
        service = services[name]
        env = service["environment"]
        assert env["LOYALTY_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["LOYALTY_DATABASE_URL"].startswith("postgresql://")
        assert env["LOYALTY_DAILY_SWEEP"] in {"on", "off"}
        assert service["command"] == [name]
        assert (
            Settings.from_env({k: str(v) for k, v in env.items()}).database_url
            == env["LOYALTY_DATABASE_URL"]
        )
    assert "8080" in " ".join(str(p) for p in services["api"]["ports"])
    assert (ROOT / services["worker"]["build"]["dockerfile"]).exists()


def test_the_image_copies_only_what_exists() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    # COPY --from=<stage> copies from an earlier stage, not from the repository.
    copies = [line.split()[1:] for line in dockerfile if line.startswith("COPY ")]
    sources = [words[0] for words in copies if not words[0].startswith("--")]
    assert sources, "the image copies the package"
    for source in sources:
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"


def _sandbox(tmp_path: Path, script: str, stand_ins: dict[str, str]) -> Path:
    """A copy of deploy/<script> in a repo of its own whose other scripts are stand-ins."""
    (tmp_path / "deploy").mkdir()
    shutil.copy(ROOT / "deploy" / script, tmp_path / "deploy" / script)
    for path, body in stand_ins.items():
        target = tmp_path / "deploy" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        record = 'echo "$(basename "$(dirname "$0")")/$(basename "$0") $*" >>"$CALLS"\n'
        target.write_text("#!/usr/bin/env bash\n" + record + body)
    return tmp_path / "deploy" / script


def _env(**extra: str) -> dict[str, str]:
    # The scripts' defaults, whatever the ports of the shell running the tests.
    env = {k: v for k, v in os.environ.items() if k not in {"KAFKA_PORT", "PG_PORT"}}
    return {**env, **extra}


def _calls(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


def test_run_stops_what_a_failed_local_up_started(tmp_path: Path) -> None:
    # `local.sh up` fails after Kafka came up: `make run` must still call `down`.
    run = _sandbox(tmp_path, "run.sh", {"local.sh": "[[ $1 == up ]] && exit 1\nexit 0\n"})
    calls = tmp_path / "calls"
    result = subprocess.run(
        ["bash", str(run)],
        env=_env(CALLS=str(calls)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert _calls(calls) == ["deploy/local.sh up", "deploy/local.sh down"], result.stderr


def test_run_interrupted_during_local_up_stops_and_goes_no_further(tmp_path: Path) -> None:
    up_then_wait = "[[ $1 == up ]] && exec sleep 30\nexit 0\n"
    run = _sandbox(tmp_path, "run.sh", {"local.sh": up_then_wait})
    calls = tmp_path / "calls"
    proc = subprocess.Popen(
        ["bash", str(run)],
        env=_env(CALLS=str(calls)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while _calls(calls) != ["deploy/local.sh up"]:
            assert time.monotonic() < deadline, "run.sh never called local.sh up"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)  # as a terminal's Ctrl-C reaches the whole group
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, output
    assert _calls(calls) == ["deploy/local.sh up", "deploy/local.sh down"], output


LOCAL_STAND_INS = {
    "kafka/kafka.sh": 'case $1 in status) exit "$KAFKA_STATUS" ;; start) echo kafka: up ;; esac\n',
    "postgres/pg.sh": "case $1 in status | start) exit 1 ;; esac\n",
}


def test_local_up_stops_kafka_when_postgres_fails(tmp_path: Path) -> None:
    local = _sandbox(tmp_path, "local.sh", LOCAL_STAND_INS)
    calls = tmp_path / "calls"
    result = subprocess.run(
        ["bash", str(local), "up"],
        env=_env(CALLS=str(calls), KAFKA_STATUS="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    made = [c for c in _calls(calls) if " status" not in c]
    assert made[:3] == [
        "kafka/kafka.sh fetch",
        "kafka/kafka.sh start 9092",
        "kafka/kafka.sh topics 9092",
    ]
    assert made[3:] == [
        "postgres/pg.sh install",
        "postgres/pg.sh start 55432",
        "kafka/kafka.sh stop",
        "postgres/pg.sh stop",
    ], result.stderr


def test_local_up_leaves_a_broker_that_already_ran_when_postgres_fails(tmp_path: Path) -> None:
    local = _sandbox(tmp_path, "local.sh", LOCAL_STAND_INS)
    calls = tmp_path / "calls"
    result = subprocess.run(
        ["bash", str(local), "up"],
        env=_env(CALLS=str(calls), KAFKA_STATUS="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "postgres/pg.sh start 55432" in _calls(calls)
    assert "kafka/kafka.sh stop" not in _calls(calls), result.stderr


# ---- the image (deploy/Dockerfile) -------------------------------------------------------

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _image_tag() -> str:
    """The name deploy/Dockerfile's build line tags the image with."""
    found = re.search(r"docker build -f deploy/Dockerfile -t (\S+) \.", DOCKERFILE.read_text())
    assert found, "deploy/Dockerfile says how to build it, with the tag the manifests use"
    return found.group(1)


def _final_stage() -> list[str]:
    lines = DOCKERFILE.read_text().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[start:]


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    # Kubernetes' runAsNonRoot can only check a numeric USER.
    users = [line.split()[1] for line in _final_stage() if line.startswith("USER ")]
    assert users, "the image names its user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    for manifest in _pod_manifests():
        pod = _pod_spec(manifest)
        assert pod["securityContext"]["runAsNonRoot"] is True, _name(manifest)
        assert pod["securityContext"]["runAsUser"] == int(uid), _name(manifest)


def test_the_image_exposes_the_api_and_metrics_ports_and_finds_its_schemas() -> None:
    stage = _final_stage()
    exposed = {
        int(port) for line in stage if line.startswith("EXPOSE ") for port in line.split()[1:]
    }
    assert exposed == {8080, 9101, 9102, 9103}
    # The schemas sit outside the package: the validator is pointed at the image's copy.
    schemas_dir = re.search(r"LOYALTY_SCHEMAS_DIR=(\S+)", "\n".join(stage))
    assert schemas_dir, "the image sets LOYALTY_SCHEMAS_DIR"
    workdir = [line.split()[1] for line in stage if line.startswith("WORKDIR ")][-1]
    (copy,) = [line.split() for line in stage if line.startswith("COPY schemas ")]
    assert Path(workdir, copy[2]) == Path(schemas_dir.group(1))
    instructions = [line for line in stage if not line.lstrip().startswith("#")]
    assert not any("[dev]" in line for line in instructions), "no development dependencies"


def test_pip_install_ships_every_data_file_of_the_package(tmp_path: Path) -> None:
    """The image installs the wheel, not the source tree: a program file, a static file of
    the dashboard or any other data file that pyproject's package-data leaves out would be
    missing there. setuptools' build_py lays out what a wheel holds, without a network."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("services", "projections"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    built = tmp_path / "build"
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(built),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    wanted = {
        path.relative_to(source)
        for package in ("services", "projections")
        for path in (source / package).rglob("*")
        if path.is_file() and path.suffix != ".py"
    }
    shipped = {path.relative_to(built) for path in built.rglob("*") if path.is_file()}
    assert wanted, "the package has data files (programs, the dashboard's static files)"
    assert not wanted - shipped, f"pip install . leaves out {sorted(map(str, wanted - shipped))}"
    assert Path("services/programs/default.toml") in shipped
    assert any(p.parts[:3] == ("services", "api", "static") for p in shipped)


def test_the_image_installs_every_library_the_code_imports() -> None:
    """The image installs pyproject's runtime dependencies and nothing else: a library the
    code imports that none of them brings in works in a development venv and fails in the
    image at the first `loyalty` command."""
    import ast
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    installed: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(line) for line in declared]
    while pending:
        requirement = pending.pop()
        key = (canonical(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        installed.add(key[0])
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        extras = requirement.extras or {""}
        for line in requires:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                pending.append(needed)
    imported: dict[str, str] = {}
    for package in ("services", "projections"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    imported.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    own = {"services", "projections", "__future__"}
    distributions = metadata.packages_distributions()
    missing = {
        module: where
        for module, where in imported.items()
        if module not in sys.stdlib_module_names
        and module not in own
        and not {canonical(d) for d in distributions.get(module, [])} & installed
    }
    assert not missing, f"imported but not among pyproject's dependencies: {missing}"


# ---- the Kubernetes manifests (deploy/k8s/) ----------------------------------------------

K8S = ROOT / "deploy" / "k8s"
SECRET_TEMPLATE = "secret.template.yaml"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _documents(path)
    ]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _manifests() if doc["kind"] == kind]


def _name(manifest: dict[str, Any]) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


def _pod_manifests() -> list[dict[str, Any]]:
    return _of_kind("Deployment") + _of_kind("Job")


def _pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(m, c) for m in _pod_manifests() for c in _pod_spec(m)["containers"]]


def _deployment(component: str) -> dict[str, Any]:
    found = [
        d
        for d in _of_kind("Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert len(found) == 1, f"one Deployment of the {component}"
    return found[0]


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it: its ConfigMaps' keys, then its
    own entries; a Secret's value is the template's placeholder."""
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in _of_kind("ConfigMap")}
    secret = _documents(K8S / SECRET_TEMPLATE)[0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"], entry["name"]
            env[entry["name"]] = secret["stringData"][ref["key"]]
    return env


def test_every_manifest_parses_and_the_kustomization_lists_the_set() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # Applying the set again must never put the template's placeholders over real secrets.
    assert SECRET_TEMPLATE in present and SECRET_TEMPLATE not in listed
    assert listed == present - {SECRET_TEMPLATE}
    kinds = [m["kind"] for m in _manifests()]
    assert sorted(kinds) == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Secret",
            "Job",
            "Deployment",
            "Deployment",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
        ]
    )
    for manifest in _manifests():
        # Namespace-agnostic: `kubectl -n NS apply -k` or an overlay picks it.
        assert "namespace" not in manifest["metadata"], _name(manifest)


def test_the_manifests_run_real_loyalty_subcommands() -> None:
    from services.cli import _parser

    parser = _parser()
    commands = {}
    for manifest, container in _containers():
        command = container["command"] + container.get("args", [])
        assert command[0] == "loyalty", _name(manifest)
        try:
            parser.parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"{_name(manifest)} runs {command}, which loyalty does not take")
        commands[_name(manifest)] = command[1]
    assert sorted(commands.values()) == ["api", "projector", "topics", "worker"]
    for component in ("worker", "projector", "api"):
        assert _deployment(component)["spec"]["template"]["spec"]["containers"][0]["command"] == [
            "loyalty",
            component,
        ]


def test_every_environment_variable_the_manifests_set_is_read_by_the_code() -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))
    names = {name for _, container in _containers() for name in _container_env(container)}
    names |= set(_documents(K8S / SECRET_TEMPLATE)[0]["stringData"])
    assert "LOYALTY_DATABASE_URL" in names
    unread = sorted(name for name in names if name not in sources)
    assert not unread, f"the manifests set variables no code reads: {unread}"
    for manifest, container in _containers():
        # The settings parse as the processes will parse them.
        env = _container_env(container)
        settings = Settings.from_env(env)
        if "LOYALTY_DATABASE_URL" in env:
            assert settings.database_url == env["LOYALTY_DATABASE_URL"], _name(manifest)


def test_the_manifests_run_the_image_the_dockerfile_builds() -> None:
    tag = _image_tag()
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert compose["services"]["worker"]["image"].split(":")[0] == tag
    for manifest, container in _containers():
        image = container["image"].split("@")[0]
        name = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        assert name == tag, f"{_name(manifest)} runs {container['image']}, not {tag}"
    kustomization = (K8S / "kustomization.yaml").read_text()
    assert f"- name: {tag}" in kustomization, "the kustomization says how to point at a registry"


def test_every_container_is_sized_and_locked_down() -> None:
    for manifest, container in _containers():
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[bound]), (_name(manifest), bound)
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, _name(manifest)
        assert security["readOnlyRootFilesystem"] is True, _name(manifest)
        assert security["capabilities"]["drop"] == ["ALL"], _name(manifest)
        assert _pod_spec(manifest)["automountServiceAccountToken"] is False, _name(manifest)
    worker = _deployment("worker")["spec"]["template"]["spec"]["containers"][0]
    # README, "Performance": CPU-bound on one core, RSS under 1 GB at a million events.
    assert worker["resources"]["requests"]["cpu"] == "1"
    assert worker["resources"]["limits"]["memory"] == "1536Mi"
    # faust keeps a data directory under the system temp dir.
    assert "/tmp" in {m["mountPath"] for m in worker["volumeMounts"]}


def test_the_processes_get_time_to_finish_a_batch_and_no_restart_loop_in_an_outage() -> None:
    for component in ("worker", "projector", "api"):
        deployment = _deployment(component)
        assert deployment["spec"]["replicas"] == 2
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 30
        if component != "api":
            container = pod["containers"][0]
            assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(container)


def test_each_process_serves_its_metrics_where_prometheus_is_told_to_scrape() -> None:
    expected = {"worker": 9101, "projector": 9102, "api": 9103}
    for component, port in expected.items():
        template = _deployment(component)["spec"]["template"]
        container = template["spec"]["containers"][0]
        env = _container_env(container)
        assert env["LOYALTY_METRICS_PORT"] == str(port)
        # Metrics bind to LOYALTY_METRICS_HOST, else the API's host: 127.0.0.1 is out of
        # Prometheus' reach.
        assert env.get("LOYALTY_METRICS_HOST", env.get("LOYALTY_API_HOST")) == "0.0.0.0"
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert {"name": "metrics", "containerPort": port} in container["ports"]
    from services.telemetry import DEFAULT_PORTS

    assert expected == DEFAULT_PORTS


def test_the_api_is_reachable_probed_and_kept_up_through_drains() -> None:
    deployment = _deployment("api")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = _container_env(container)
    # The API binds 0.0.0.0 only with a token; else 127.0.0.1, out of the Service's reach.
    assert env["LOYALTY_API_HOST"] == "0.0.0.0"
    token = next(e for e in container["env"] if e["name"] == "LOYALTY_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["key"] == "LOYALTY_API_TOKEN"
    port = int(env["LOYALTY_API_PORT"])
    http = next(p for p in container["ports"] if p["name"] == "http")
    assert http["containerPort"] == port == 8080
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    (service,) = _of_kind("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]
    (budget,) = _of_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["minAvailable"] == 1


def test_the_mounted_program_is_a_valid_program_file(tmp_path: Path) -> None:
    from services.program_file import load_program

    (config,) = [c for c in _of_kind("ConfigMap") if "LOYALTY_PROGRAM" in c["data"]]
    path = Path(config["data"]["LOYALTY_PROGRAM"])
    for component in ("worker", "projector", "api"):
        pod = _deployment(component)["spec"]["template"]["spec"]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        (volume,) = [n for n, at in mounts.items() if Path(at) == path.parent]
        program_map = volumes[volume]["configMap"]["name"]
    (programs,) = [c for c in _of_kind("ConfigMap") if c["metadata"]["name"] == program_map]
    program_file = tmp_path / path.name
    program_file.write_text(programs["data"][path.name])
    load_program(program_file)  # a malformed program stops start-up: here it stops the test


def test_the_runbook_holds_every_section_the_deploy_files_point_at() -> None:
    runbook = (ROOT / "deploy" / "RUNBOOK.md").read_text()
    headings = set(re.findall(r"^## (.+)$", runbook, flags=re.MULTILINE))
    files = [*K8S.glob("*.yaml"), ROOT / "deploy" / "grafana" / "loyalty-dashboard.json"]
    cited = {
        section
        for path in files
        for section in re.findall(r'RUNBOOK(?:\.md)?, \\?"([^"\\]+)\\?"', path.read_text())
    }
    assert cited, "the manifests point at the runbook"
    # A heading may say more after the name cited: "Sizing: partitions, workers, ...".
    missing = [c for c in cited if not any(re.match(rf"{re.escape(c)}\b", h) for h in headings)]
    assert not missing, f"deploy/RUNBOOK.md has no section {sorted(missing)}"


# ---- the Grafana dashboard (deploy/grafana/loyalty-dashboard.json) ------------------------

# The metrics services/telemetry.py exposes, as Prometheus names them, by type.
METRICS = {
    "loyalty_ingest_messages_total": "counter",
    "loyalty_ingest_batch_messages": "histogram",
    "loyalty_ingest_write_seconds": "histogram",
    "loyalty_ingest_consumer_lag": "gauge",
    "loyalty_dead_letters_total": "counter",
    "loyalty_outage_retries_total": "counter",
    "loyalty_store_position": "gauge",
    "loyalty_projection_position": "gauge",
    "loyalty_projection_lag_events": "gauge",
    "loyalty_relay_position": "gauge",
    "loyalty_relay_lag_events": "gauge",
    "loyalty_api_requests_total": "counter",
    "loyalty_api_request_seconds": "histogram",
}
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def _series_names() -> set[str]:
    """What an expression may select: a histogram only by its series."""
    names = set()
    for name, kind in METRICS.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: the identifiers left once strings,
    label matchers, ranges and grouping clauses are gone, that are neither a function
    (followed by a parenthesis) nor a keyword."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if match.group() in PROMQL_KEYWORDS or expr[match.end() :].lstrip().startswith("("):
            continue
        names.add(match.group())
    return names


def test_the_promql_scanner_finds_metric_names_and_only_them() -> None:
    assert _metric_names(
        "histogram_quantile(0.95, sum by (route, le) (rate(loyalty_api_request_seconds_bucket"
        '{route!~"/health|/ready"}[$__rate_interval])))'
    ) == {"loyalty_api_request_seconds_bucket"}
    assert _metric_names("sum(rate(a_total[5m])) / on() group_left count(up) > 1e3") == {
        "a_total",
        "up",
    }


def _dashboard() -> dict[str, Any]:
    path = ROOT / "deploy" / "grafana" / "loyalty-dashboard.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_the_dashboard_queries_only_the_metrics_the_processes_expose() -> None:
    dashboard = _dashboard()
    allowed = _series_names()
    used: set[str] = set()
    exprs = [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]
    exprs += [
        (variable["name"], variable["query"]["query"])
        for variable in dashboard["templating"]["list"]
        if isinstance(variable.get("query"), dict) and "query" in variable["query"]
    ]
    assert exprs
    for title, expr in exprs:
        names = _metric_names(expr)
        assert names, f"panel {title!r}: {expr} selects no metric"
        assert names <= allowed, f"panel {title!r} queries {sorted(names - allowed)}"
        used |= names
    for name, kind in METRICS.items():
        series = (
            {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
        )
        assert used & series, f"no panel shows {name}"


def test_the_dashboard_is_grafana_10_with_a_prometheus_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 38  # Grafana 10.0
    assert dashboard["uid"] and dashboard["title"]
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    rows = [panel["title"] for panel in panels if panel["type"] == "row"]
    for process in ("loyalty worker", "loyalty projector", "loyalty api"):
        assert any(process in title for title in rows), f"no row for {process}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_dashboard_metric_list_is_what_telemetry_registers() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from services import telemetry

    exposed = {}
    for value in vars(telemetry).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            suffix = "_total" if family.type == "counter" else ""
            exposed[family.name + suffix] = family.type
    assert exposed == METRICS


def test_the_projector_shares_a_long_catch_up_among_as_many_processes_as_its_cpu_limit() -> None:
    """A CPU limit does not change the cores a container sees: left to the default, a
    projector on a large node would start more processes than its limit lets run."""
    (container,) = _pod_spec(_deployment("projector"))["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    limit = container["resources"]["limits"]["cpu"]
    assert env["LOYALTY_PROJECTION_PROCESSES"] == str(limit)
    assert Settings.from_env(
        {"LOYALTY_PROJECTION_PROCESSES": env["LOYALTY_PROJECTION_PROCESSES"]}
    ).projection_processes == int(limit)


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_a_projection_process_count_below_one_stops_start_up(value: str) -> None:
    with pytest.raises(ValueError, match="LOYALTY_PROJECTION_PROCESSES"):
        Settings.from_env({"LOYALTY_PROJECTION_PROCESSES": value})
