"""A real, distributed Airflow 3 deployment made of local processes, for integration tests.

``AirflowCluster`` owns everything it starts: a metadata database created in the
machine's PostgreSQL (dropped afterwards), a dedicated Redis database number as the
Celery broker (flushed afterwards), a fresh ``AIRFLOW_HOME``, and one OS process per
Airflow component (api-server, scheduler, dag-processor, Celery workers), each started
in its own session so that the whole tree under it (Celery pool children, task
supervisors and their task processes) can be signalled by process group and found by
session id. Each process writes to its own log file; ``stop_all`` ends them by PID and
``stray_processes`` proves nothing is left.

Both workers run on this one machine, so the task instances' ``hostname`` column would
be the same for both. Each worker therefore gets ``[core] hostname_callable`` pointing to
a small module that returns the worker's own name, which is what distinct hosts would
report in a real deployment (Docker containers have distinct host names).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import redis

PG_HOST = os.environ.get("RECEIPT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("RECEIPT_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("RECEIPT_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("RECEIPT_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("RECEIPT_TEST_REDIS_PORT", "6379"))
# A database number no one else on the machine uses; checked to be empty before use.
REDIS_DB = int(os.environ.get("RECEIPT_TEST_REDIS_DB", "11"))

AIRFLOW_BIN = str(Path(sys.executable).with_name("airflow"))
_REDIS_OWNER_KEY = "receipts-integration-test:owner"
# Keys Celery/kombu leave in a broker database: queues, bindings, unacked messages.
_CELERY_KEY = re.compile(rb"^(_kombu\.|unacked|celery|default|gpu|[0-9a-f-]{36}$)")


def _is_celery_key(key: bytes) -> bool:
    return bool(_CELERY_KEY.match(key))


_HOSTNAME_MODULE = textwrap.dedent('''\
    """Worker identity for the integration test: one name per simulated host."""
    import os


    def worker_hostname() -> str:
        return os.environ["RECEIPT_TEST_WORKER_HOSTNAME"]
    ''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_url(database: str, *, driver: str = "postgresql") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def create_database(name: str) -> None:
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:  # not "with conn": that would open a transaction block
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def drop_database(name: str) -> None:
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            # FORCE ends sessions still open from the processes just stopped (PG >= 13).
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


def query(database: str, sql: str, params: Iterable = ()) -> list[tuple]:
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, tuple(params))
            return cur.fetchall()
    finally:
        conn.close()


def _session_id(pid: int) -> int | None:
    """Session id of a live process; None for a process that is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the ")" that closes the command name: state ppid pgrp session ...
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, only waiting for its (new) parent to reap it
        return None
    return int(fields[3])


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class AirflowCluster:
    """Config, services and processes of one test deployment; use as a context manager."""

    work_dir: Path
    dags_folder: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    # "LocalExecutor" runs tasks in the scheduler's own worker processes: no broker, so
    # the Redis database is neither claimed nor flushed.
    executor: str = "CeleryExecutor"
    run_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    processes: list[ManagedProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metadata_db = f"airflow_it_{self.run_tag}"
        self.api_port = free_port()
        # One secret for every component: tokens signed by one must verify in the others.
        self.secret = uuid.uuid4().hex + uuid.uuid4().hex
        # As in production: Variables and connection passwords encrypted at rest.
        from cryptography.fernet import Fernet

        self.fernet_key = Fernet.generate_key().decode()
        self.home = self.work_dir / "airflow-home"
        self.logs_dir = self.work_dir / "process-logs"
        self.pythonpath_dir = self.work_dir / "pythonpath"
        for path in (self.home, self.logs_dir, self.pythonpath_dir):
            path.mkdir(parents=True, exist_ok=True)
        (self.pythonpath_dir / "it_worker_identity.py").write_text(_HOSTNAME_MODULE)
        self._db_created = False
        self._redis_claimed = False

    # -- environment --------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        """The environment every component shares (the JWT secret above all)."""
        # Start from the caller's environment minus any Airflow or pipeline settings (the
        # pytest session sets AIRFLOW_HOME, unit-test mode and RECEIPT_* for in-process
        # tests; none of that applies here: the test passes its own in extra_env).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECEIPT_"))}
        broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Runs are only created by the test's trigger: no scheduled run for "yesterday"
            # competes with it, and the DAG is live as soon as it is parsed.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_url(self.metadata_db, driver="postgresql+psycopg2"),
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg_url(self.metadata_db),
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            # Airflow 3 workers run tasks through the api-server's execution API, with JWTs
            # that the api-server signs and every component must be able to verify.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secret,
            "AIRFLOW__API__SECRET_KEY": self.secret,
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(self.pythonpath_dir), env.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        })
        env.update(self.extra_env)
        return env

    # -- services -------------------------------------------------------------------------
    def prepare_services(self) -> None:
        """Claim the Redis database (one test deployment at a time) and create the
        metadata database."""
        if self.executor == "CeleryExecutor":
            self._claim_redis()
        create_database(self.metadata_db)
        self._db_created = True

    def _claim_redis(self) -> None:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        if not client.set(_REDIS_OWNER_KEY, self.run_tag, nx=True, ex=1200):
            raise RuntimeError(f"Redis db {REDIS_DB} is in use by another test deployment "
                               f"({client.get(_REDIS_OWNER_KEY)!r}); set RECEIPT_TEST_REDIS_DB")
        foreign = [k for k in client.scan_iter(count=1000)
                   if k != _REDIS_OWNER_KEY.encode() and not _is_celery_key(k)]
        if foreign:
            client.delete(_REDIS_OWNER_KEY)
            raise RuntimeError(f"Redis db {REDIS_DB} holds keys of someone else ({foreign[:5]}); "
                               "set RECEIPT_TEST_REDIS_DB to a free database number")
        # Only broker state of an earlier, killed run of this harness is left: start clean.
        for key in client.scan_iter(count=1000):
            if key != _REDIS_OWNER_KEY.encode():
                client.delete(key)
        self._redis_claimed = True

    def release_services(self) -> None:
        if self._redis_claimed:
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB).flushdb()
            self._redis_claimed = False
        if self._db_created:
            drop_database(self.metadata_db)
            self._db_created = False

    # -- commands and processes -----------------------------------------------------------
    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run one Airflow CLI command to completion; its output on success."""
        done = subprocess.run([AIRFLOW_BIN, *args], env=self.base_env(), cwd=self.work_dir,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> ManagedProcess:
        """Start one Airflow component (``airflow <args>``) in a session of its own."""
        return self.spawn(name, [AIRFLOW_BIN, *args], env=env)

    def spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> ManagedProcess:
        log_path = self.logs_dir / f"{name}.log"
        log_file = open(log_path, "wb")
        popen = subprocess.Popen(argv, env={**self.base_env(), **(env or {})},
                                 cwd=self.work_dir, stdout=log_file, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        log_file.close()  # the child holds its own descriptor
        process = ManagedProcess(name, popen, log_path)
        self.processes.append(process)
        return process

    def start_worker(self, name: str, queue: str, *, concurrency: int = 1) -> ManagedProcess:
        return self.start(
            name, "celery", "worker", "--queues", queue, "--celery-hostname", f"{name}@%h",
            "--concurrency", str(concurrency), "--skip-serve-logs", "--without-gossip",
            "--without-mingle",
            env={"AIRFLOW__CORE__HOSTNAME_CALLABLE": "it_worker_identity.worker_hostname",
                 "RECEIPT_TEST_WORKER_HOSTNAME": name})

    def check_alive(self) -> None:
        dead = [p for p in self.processes if p.popen.poll() is not None]
        if dead:
            raise RuntimeError("component(s) exited early:\n" + "\n".join(
                f"--- {p.name} (rc={p.popen.returncode}) ---\n{p.log_tail()}" for p in dead))

    def wait_http_ok(self, url: str, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout:.0f}s")
            time.sleep(2)

    def wait_for(self, description: str, predicate, timeout: float, interval: float = 3):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {description}\n"
                                   + self.diagnostics())
            time.sleep(interval)

    def api(self, method: str, path: str, payload: dict | None = None) -> dict:
        """Call the api-server's REST API as the admin (simple auth manager, all-admins mode:
        the token endpoint hands out an admin token without credentials)."""
        import urllib.request

        base = f"http://127.0.0.1:{self.api_port}"
        with urllib.request.urlopen(f"{base}/auth/token", timeout=30) as response:
            token = json.load(response)["access_token"]
        request = urllib.request.Request(
            base + path, method=method, data=None if payload is None else json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from exc

    def variable(self, key: str) -> str | None:
        """A Variable's value as stored in the metadata DB (decrypted)."""
        from cryptography.fernet import Fernet

        rows = self.metadata("SELECT val, is_encrypted FROM variable WHERE key = %s", (key,))
        if not rows:
            return None
        value, encrypted = rows[0]
        return Fernet(self.fernet_key.encode()).decrypt(value.encode()).decode() if encrypted else value

    def metadata(self, sql: str, params: Iterable = ()) -> list[tuple]:
        return query(self.metadata_db, sql, params)

    # -- shutdown ------------------------------------------------------------------------
    def stray_processes(self) -> list[int]:
        """PIDs still alive in any session this cluster started."""
        sessions = {p.pid for p in self.processes}
        strays = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _session_id(int(entry.name)) in sessions:
                strays.append(int(entry.name))
        return strays

    def stop_all(self, timeout: float = 60) -> list[str]:
        """SIGTERM each component's process group (warm shutdown), then SIGKILL leftovers.

        Returns what had to be killed with SIGKILL (empty when everything shut down cleanly).
        """
        forced: list[str] = []
        for process in self.processes:
            if process.popen.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                forced.append(f"{process.name} (pid {process.pid})")
                os.killpg(process.pid, signal.SIGKILL)
                process.popen.wait(10)
        # Task processes live in process groups of their own (the task supervisor calls
        # setpgid) but keep the session: wait for them to follow, then kill by PID.
        while self.stray_processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in self.stray_processes():
            forced.append(f"stray pid {pid}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # SIGKILL is delivered asynchronously: give the kernel a moment to end them.
        settle = time.monotonic() + 10
        while self.stray_processes() and time.monotonic() < settle:
            time.sleep(0.05)
        return forced

    def diagnostics(self) -> str:
        parts = [f"--- {p.name} (pid {p.pid}, rc={p.popen.poll()}) ---\n{p.log_tail(2500)}"
                 for p in self.processes]
        task_logs = sorted((self.home / "logs").rglob("*.log")) if (self.home / "logs").exists() else []
        for log in task_logs[-6:]:
            parts.append(f"--- task log {log.relative_to(self.home)} ---\n"
                         f"{log.read_text(errors='replace')[-2500:]}")
        return "\n".join(parts)

    def __enter__(self) -> AirflowCluster:
        self.prepare_services()
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self.stop_all()
        finally:
            self.release_services()


def write_json(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload, indent=2))
    return path
