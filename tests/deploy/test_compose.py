"""Static checks of the production stack (no Docker engine runs here).

docker-compose.yaml is parsed and interpolated the way `docker compose` does it, with the
values of .env.example; the names in it are checked against what the code actually reads
(environment variables and connection ids found in include/, dags/ and plugins/, the
config module's behaviour, the DAG's extract task), and against docs/production.md.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCS = REPO / "docs" / "production.md"
CODE_DIRS = (REPO / "include" / "extractor", REPO / "dags", REPO / "plugins")

# Services the issue asks for (production deployment); docs/production.md lists them all.
REQUIRED_SERVICES = {
    "postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler",
    "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-worker-gpu",
    "warehouse-postgres", "minio", "minio-init"}

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")


# ----------------------------------------------------------------------------- helpers

def parse_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?error}, ${VAR?error}; `$$` is a literal `$`."""
    def replace(match: re.Match) -> str:
        if match.group("dollar"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op in (":-", ":?") and not value or op in ("-", "?") and value is None:
            if op.endswith("?"):
                raise KeyError(f"{name} is required: {arg}")
            return arg
        return value or ""
    return _VAR.sub(replace, text)


def strings_in(node) -> list[str]:
    """Every string value of a parsed YAML document (compose interpolates values, not
    comments or keys)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings_in(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings_in(value)]
    return []


def interpolate_document(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_document(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_document(value, env) for value in node]
    return node


def variables_without_default(text: str) -> set[str]:
    """Variables the compose file needs from `.env`: no `:-`/`-` default."""
    names = set()
    for match in _VAR.finditer(text):
        name = match.group("braced") or match.group("plain")
        if name and (match.group("op") or "") not in (":-", "-"):
            names.add(name)
    return names


def all_variables(text: str) -> set[str]:
    return {m.group("braced") or m.group("plain") for m in _VAR.finditer(text)} - {None}


def _python_files():
    for folder in CODE_DIRS:
        yield from (p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def code_string_constants() -> set[str]:
    strings = set()
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return strings


def code_env_names() -> set[str]:
    """Environment variables of the project (RECEIPT_*) that the code mentions."""
    return {s for s in code_string_constants() if re.fullmatch(r"RECEIPT_[A-Z0-9_]+", s)}


def code_connection_ids() -> set[str]:
    """Values of module-level ``*_CONN_ID`` / ``*_CONN_IDS`` constants in the code."""
    ids = set()
    for path in _python_files():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and re.search(r"CONN_IDS?$", t.id) for t in node.targets):
                value = ast.literal_eval(node.value)
                ids.update([value] if isinstance(value, str) else value)
    return ids


def command_args(service: dict) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def queues_of(service: dict) -> set[str]:
    args = command_args(service)
    assert args[:2] == ["celery", "worker"], args
    for flag in ("-q", "--queues"):
        if flag in args:
            return set(args[args.index(flag) + 1].split(","))
    return {"default"}


def volume_mounts(service: dict) -> dict[str, str]:
    """Container path -> source (named volume or host path)."""
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry["source"], entry["target"]
        mounts[target] = source
    return mounts


def volume_at(service: dict, path: str) -> str | None:
    """The volume that holds ``path`` inside the container (longest mount prefix)."""
    best = None
    for target, source in volume_mounts(service).items():
        if (path == target or path.startswith(target.rstrip("/") + "/")) and (
                best is None or len(target) > len(best[0])):
            best = (target, source)
    return best[1] if best else None


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose_text(compose_raw) -> str:
    """All string values of the file (what compose interpolates), one per line."""
    return "\n".join(strings_in(compose_raw))


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(compose_raw, env_example) -> dict:
    """The file as `docker compose config` would see it with .env = .env.example."""
    return interpolate_document(compose_raw, env_example)


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def extract_task(services):
    """The DAG's extract task, parsed with the queue setting the stack gives the dag-processor."""
    import os
    import sys

    queue_env = environment(services["airflow-dag-processor"])["RECEIPT_GPU_QUEUE"]
    saved = os.environ.get("RECEIPT_GPU_QUEUE")
    os.environ["RECEIPT_GPU_QUEUE"] = queue_env
    sys.path.insert(0, str(REPO / "plugins"))
    try:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO / "dags" / "receipts.py"))
        assert not bag.import_errors, bag.import_errors
        return bag.dags["receipts_daily"].get_task("extract")  # no DB lookup (get_dag checks one)
    finally:
        sys.path.remove(str(REPO / "plugins"))
        if saved is None:
            os.environ.pop("RECEIPT_GPU_QUEUE", None)
        else:
            os.environ["RECEIPT_GPU_QUEUE"] = saved


# ----------------------------------------------------------------------------- tests

def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $$HOME $SET", env) == "x d d  $HOME x"
    with pytest.raises(KeyError):
        interpolate("${UNSET:?needed}", env)
    assert variables_without_default("${A} ${B:-1} ${C:?x} $D $${E}") == {"A", "C", "D"}


def test_compose_parses_with_the_required_services(services):
    assert REQUIRED_SERVICES <= set(services), REQUIRED_SERVICES - set(services)


def test_docs_list_exactly_the_compose_services(services):
    """docs/production.md's service table names every service, and only existing ones."""
    documented = set(re.findall(r"^\|\s*`([a-z0-9-]+)`\s*\|", DOCS.read_text(), flags=re.M))
    assert documented, "docs/production.md has no service table"
    assert documented - set(services) == set(), "documented but not in docker-compose.yaml"
    assert set(services) - documented == set(), "in docker-compose.yaml but not documented"


def test_env_example_covers_every_variable_without_default(compose_text, env_example):
    needed = variables_without_default(compose_text)
    assert needed, "expected required settings (passwords, keys) without defaults"
    assert needed - set(env_example) == set()
    # ... and documents no setting the compose file does not use.
    assert set(env_example) - all_variables(compose_text) == set()


def test_env_example_holds_no_secrets(env_example):
    secretish = {k: v for k, v in env_example.items()
                 if re.search(r"PASSWORD|SECRET|FERNET|TOKEN", k)}
    assert secretish
    for key, value in secretish.items():
        assert value == "" or "change-me" in value, f"{key} looks like a real secret"


def test_depends_on_targets_exist_with_sound_conditions(services):
    for name, service in services.items():
        depends = service.get("depends_on", {})
        items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for target, spec in items:
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
            elif condition == "service_completed_successfully":
                assert is_one_shot(services[target]), f"{target} must be a one-shot for {name}"
            else:
                assert condition == "service_started", condition


def test_long_running_services_have_health_checks(services):
    for name, service in services.items():
        if is_one_shot(service):  # init jobs and the ad-hoc airflow-cli
            continue
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"


def test_airflow_components_wait_for_init_and_share_settings(services):
    airflow = {n: s for n, s in services.items() if n.startswith("airflow-") and n != "airflow-init"
               and "profiles" not in s}
    shared = environment(services["airflow-init"])
    for name, service in airflow.items():
        assert service["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        env = environment(service)
        for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__API_AUTH__JWT_SECRET",
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__CELERY__BROKER_URL",
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__FERNET_KEY"):
            assert env.get(key) and env[key] == shared[key], f"{name}: {key}"
    assert environment(services["airflow-apiserver"])["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    api_url = environment(services["airflow-worker-gpu"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert api_url.startswith("http://airflow-apiserver:8080/"), api_url


def test_gpu_worker_listens_on_the_extract_tasks_queue(services, extract_task):
    gpu, cpu = services["airflow-worker-gpu"], services["airflow-worker"]
    assert extract_task.queue in queues_of(gpu)
    assert extract_task.queue not in queues_of(cpu), "the CPU worker would steal extract tasks"
    other_queues = {t.queue for t in extract_task.dag.tasks if t.task_id != "extract"}
    assert other_queues <= queues_of(cpu), "some tasks would have no worker"


def test_gpu_worker_reserves_nvidia_gpus(services, compose_text, env_example):
    gpu = services["airflow-worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert str(device["count"]) == env_example["GPU_COUNT"]
    assert "${GPU_COUNT" in compose_text, "GPU count must be configurable"
    assert gpu["image"] != services["airflow-worker"]["image"], "GPU worker needs the CUDA image"
    assert gpu["build"]["target"] == "gpu"


def test_shared_storage_paths_are_what_the_config_module_reads(services, monkeypatch):
    """With the workers' environment, extractor.pipeline.config resolves the model cache and
    the staging folder to paths on volumes that every worker mounts (ensure_model runs on a
    CPU worker, extract on the GPU worker, validate_and_load on a CPU worker)."""
    from extractor.pipeline import config

    volumes_seen = {}
    for name in ("airflow-worker", "airflow-worker-gpu"):
        env = environment(services[name])
        for key in list(env):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            if key.startswith("RECEIPT_"):
                monkeypatch.setenv(key, value)
        cfg = config.load_config(lambda _key: None, warehouse_conn_exists=True)
        assert config.gpu_queue() == env["RECEIPT_GPU_QUEUE"]
        assert cfg.source.startswith("s3://"), "production reads receipts from object storage"
        assert cfg.warehouse_url is None, "the warehouse comes from the receipts_warehouse connection"
        for what, path in (("model cache", cfg.model_cache_dir), ("staging", cfg.staging_dir)):
            volume = volume_at(services[name], str(path))
            assert volume, f"{name}: {what} {path} is not on a volume"
            volumes_seen.setdefault(what, set()).add(volume)
    for what, volumes in volumes_seen.items():
        assert len(volumes) == 1, f"{what} is on different volumes per worker: {volumes}"


def test_named_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source in volume_mounts(service).values():
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_receipt_env_names_exist_in_the_code(services):
    known = code_env_names()
    assert "RECEIPT_MODEL_CACHE" in known  # the scan works
    for name, service in services.items():
        unknown = {k for k in environment(service) if k.startswith("RECEIPT_")} - known
        assert unknown == set(), f"{name} sets variables no code reads: {unknown}"


def test_connections_are_the_ids_the_code_uses(services):
    from airflow.models.connection import Connection

    from extractor.pipeline import config

    known = code_connection_ids()
    env = environment(services["airflow-worker"])
    defined = {k[len("AIRFLOW_CONN_"):].lower(): v for k, v in env.items()
               if k.startswith("AIRFLOW_CONN_")}
    assert set(defined) <= known, set(defined) - known
    assert config.WAREHOUSE_CONN_ID in defined
    assert set(config.DEFAULT_S3_CONN_IDS) & set(defined)
    assert env["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"] in defined
    for conn_id, value in defined.items():
        conn = Connection.from_json(value, conn_id=conn_id)
        assert conn.conn_type, conn_id
    warehouse = Connection.from_json(defined[config.WAREHOUSE_CONN_ID])
    assert (warehouse.conn_type, warehouse.host) == ("postgres", "warehouse-postgres")
    s3 = Connection.from_json(defined["receipts_s3"])
    assert s3.extra_dejson["endpoint_url"] == "http://minio:9000"


def test_init_files_match_the_dag_and_the_code(extract_task):
    from extractor.pipeline.quality.expectations import Thresholds
    from extractor.spec import resolve_spec

    variables = json.loads((REPO / "deploy" / "variables.json").read_text())
    strings = code_string_constants()
    assert set(variables) <= strings, f"Variables no code reads: {set(variables) - strings}"
    config = variables["receipts_config"]  # one JSON Variable (extractor.settings.KEYS)
    assert len(resolve_spec(config["model"]).revision) == 40, "deploy pins a commit sha"
    Thresholds.from_dict(config.get("thresholds"))
    pools = json.loads((REPO / "deploy" / "pools.json").read_text())
    assert pools[extract_task.pool]["slots"] >= 1


def test_init_scripts_are_wired_into_the_services(services):
    init = services["airflow-init"]
    script = command_args(init)[-1]
    assert script.startswith("/opt/airflow/deploy/")
    assert (REPO / "deploy" / Path(script).name).is_file()
    assert "COPY --chown=airflow:root deploy /opt/airflow/deploy" in (REPO / "Dockerfile").read_text()

    minio_init = services["minio-init"]
    mounts = volume_mounts(minio_init)
    script = minio_init["entrypoint"][-1]
    mount_target = next(t for t in mounts if script.startswith(t + "/"))
    assert (REPO / mounts[mount_target].lstrip("./") / Path(script).name).is_file()
    text = (REPO / "deploy" / Path(script).name).read_text()
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text))
    assert used <= set(environment(minio_init)), used - set(environment(minio_init))
    buckets = environment(minio_init)["BUCKETS"].split()
    source_bucket = environment(services["airflow-worker"])["RECEIPT_SOURCE"][5:].split("/")[0]
    log_bucket = environment(services["airflow-worker"])[
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"][5:].split("/")[0]
    assert {source_bucket, log_bucket} <= set(buckets)


def test_dockerfile_extends_the_official_image_of_the_pinned_airflow(services):
    text = (REPO / "Dockerfile").read_text()
    version = importlib.metadata.version("apache-airflow")
    assert f"ARG AIRFLOW_VERSION={version}" in text
    assert "FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}" in text
    assert "ARG PYTHON_VERSION=3.11" in text
    assert f"apache-airflow=={version}" in (REPO / "requirements.txt").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.M))
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["target"] in targets, name
    assert re.search(r"pip install .*-r /opt/receipts/requirements.txt", text)
    assert "pip install --no-cache-dir --no-deps /opt/receipts" in text


def test_per_device_gpu_workers_pin_one_gpu_each(services):
    """Profile gpu-per-device: workers identical to the all-GPUs worker except that each
    sees one distinct GPU through CUDA_VISIBLE_DEVICES and runs one task at a time."""
    base = services["airflow-worker-gpu"]
    assert "profiles" not in base, "the all-GPUs worker is the default"
    workers = {n: s for n, s in services.items() if n.startswith("airflow-worker-gpu-")}
    assert len(workers) >= 2
    devices = []
    for name, service in workers.items():
        assert service["profiles"] == ["gpu-per-device"], name
        env = environment(service)
        devices.append(int(env.pop("CUDA_VISIBLE_DEVICES")))
        assert env.pop("AIRFLOW__CELERY__WORKER_CONCURRENCY") == "1"
        own_service = env.pop("RECEIPT_EXTRACTION_SERVICE_URL")  # checked in the test below
        base_env = environment(base)
        base_env.pop("AIRFLOW__CELERY__WORKER_CONCURRENCY")
        base_env.pop("RECEIPT_EXTRACTION_SERVICE_URL")
        assert env == base_env, name
        same = ("image", "command", "volumes", "deploy", "healthcheck")
        assert {k: service.get(k) for k in same} == {k: base.get(k) for k in same}, name
        depends = {k: v for k, v in service["depends_on"].items() if k != urlsplit(own_service).hostname}
        base_depends = {k: v for k, v in base["depends_on"].items() if not k.startswith("extraction-service")}
        assert depends == base_depends, name
    assert sorted(devices) == list(range(len(devices))), devices


def _gpu_workers(services) -> dict[str, dict]:
    return {n: s for n, s in services.items() if n.startswith("airflow-worker-gpu")}


def test_each_gpu_worker_has_its_own_resident_extraction_service(services):
    """Beside every GPU worker (the default one and one per GPU in the gpu-per-device
    profile) runs one extraction service: the worker's RECEIPT_EXTRACTION_SERVICE_URL names
    it, the worker waits for it to start, it has the same profile and GPU, mounts the model
    cache the worker's tasks resolve, restarts on failure, checks /health on the port it
    serves, and its command is one the real `python -m extractor serve` parser accepts."""
    from extractor.cli import build_parser

    workers = _gpu_workers(services)
    served = {}
    for name, worker in workers.items():
        url = urlsplit(environment(worker)["RECEIPT_EXTRACTION_SERVICE_URL"])
        target = url.hostname
        assert target in services and target not in served.values(), f"{name}: {target}"
        served[name] = target
        service = services[target]
        assert worker["depends_on"][target]["condition"] in ("service_started", "service_healthy")
        assert service.get("profiles") == worker.get("profiles"), target
        worker_env, env = environment(worker), environment(service)
        assert env.get("CUDA_VISIBLE_DEVICES") == worker_env.get("CUDA_VISIBLE_DEVICES"), target
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert service["image"] == worker["image"] and service["build"]["target"] == "gpu"
        cache = worker_env["RECEIPT_MODEL_CACHE"]
        assert env["RECEIPT_MODEL_CACHE"] == cache
        assert volume_at(service, cache) == volume_at(worker, cache) == "model-cache"
        assert str(service["restart"]) in ("always", "unless-stopped")
        args = command_args(service)
        assert args[:4] == ["python", "-m", "extractor", "serve"], args
        parsed = build_parser().parse_args(args[3:])
        assert (parsed.host, parsed.port) == ("0.0.0.0", url.port or 80), target
        assert volume_at(service, parsed.cache_dir) == "model-cache"
        check = " ".join(service["healthcheck"]["test"])
        assert f"localhost:{parsed.port}/health" in check, check
    assert len(served) >= 3, served  # the default worker and two per-device ones


def test_the_service_url_is_what_the_config_module_reads(services, monkeypatch):
    from extractor.pipeline import config

    env = environment(services["airflow-worker-gpu"])
    monkeypatch.setenv("RECEIPT_EXTRACTION_SERVICE_URL", env["RECEIPT_EXTRACTION_SERVICE_URL"])
    cfg = config.load_config(lambda _key: None, warehouse_conn_exists=True)
    assert cfg.extraction_service_url == "http://extraction-service:8000"
    assert "RECEIPT_EXTRACTION_SERVICE_URL" not in environment(services["airflow-worker"]), \
        "CPU workers run no extract task"


def _compose_cli() -> list[str] | None:
    import shutil
    import subprocess

    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.parametrize("profile", [None, "gpu-per-device"])
def test_a_real_compose_cli_accepts_the_file(profile, services, tmp_path):
    """Where a Compose CLI is installed (no engine needed for `config`), it validates the
    file against its schema and renders the same GPU worker as our interpolation; and it
    refuses to render without the required secrets."""
    import subprocess

    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose / docker-compose CLI on this machine")
    clean_env = {"PATH": __import__("os").environ["PATH"], "GPU_COUNT": "2"}
    args = [*cli, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE)]
    args += ["--profile", profile] if profile else []
    done = subprocess.run([*args, "config"], capture_output=True, text=True, env=clean_env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)["services"]
    expected = {n for n, s in services.items()
                if not s.get("profiles") or profile in s.get("profiles", [])}
    assert expected <= set(rendered) <= set(services)  # Compose v1 renders every profile
    gpu = rendered["airflow-worker-gpu"]
    assert gpu["command"] in ("celery worker -q gpu", ["celery", "worker", "-q", "gpu"])
    assert str(gpu["deploy"]["resources"]["reservations"]["devices"][0]["count"]) == "2"
    assert gpu["environment"]["RECEIPT_MODEL_CACHE"] == environment(
        services["airflow-worker-gpu"])["RECEIPT_MODEL_CACHE"]

    empty = tmp_path / "empty.env"
    empty.write_text("")
    missing = subprocess.run([*cli, "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config"],
                             capture_output=True, text=True, env=clean_env, timeout=120)
    assert missing.returncode != 0 and "in .env" in missing.stderr


def test_per_device_services_share_the_host_cores(services):
    """One extraction service per GPU: each sizes its CPU thread pools to a share of the host
    (measured: without it two services on a 2-GPU host ran 1.28x one, with it 1.91x)."""
    per_device = {n: s for n, s in services.items()
                  if n.startswith("extraction-service-") and s.get("profiles") == ["gpu-per-device"]}
    assert len(per_device) >= 2
    for name, service in per_device.items():
        env = environment(service)
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "8", name  # ${RECEIPT_THREADS_PER_GPU:-8}
