"""The review loop end to end on real local Airflow 3.3 processes.

api-server, scheduler (LocalExecutor), triggerer and dag-processor run as separate OS
processes (tests/integration/airflow_cluster.py) over a fresh PostgreSQL metadata database,
with this repo's DAGs and plugins and a PostgreSQL warehouse (both databases dropped
afterwards). Users log in through Airflow's simple auth manager with a password.

``test_rest_answers_reach_the_warehouse_and_the_eval_dataset``: a day with one receipt
read with low confidence (the threshold is set above what the OCR reader gives), one
receipt quarantined for a date in the future and one file that is not an image ->
``receipts_daily`` -> the Asset event starts ``receipts_review`` -> two review forms wait
(the broken file gets none) -> the test reads the forms and the image endpoint, and answers
through the REST API as the UI does (one correction, one rejection) -> ``corrections``,
``receipts_current`` and ``export-labels`` (then ``eval``) show them.

``test_a_reviewer_corrects_the_total_in_a_real_browser``: Debian's chromium through
selenium logs in, opens the waiting form of the next day's receipt, sees its image, changes
the total and submits; the warehouse holds the new total. Skipped, with the reason, when
chromium / chromedriver / selenium are not installed (the Makefile's test target installs
them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import airflow_cluster as ac

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "reviewer", "review-loop-test-password"
STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 420


class LocalCluster(ac.AirflowCluster):
    """The harness with LocalExecutor: no Celery, so no Redis database to claim."""

    def prepare_services(self) -> None:
        ac.create_database(self.metadata_db)
        self._db_created = True

    def release_services(self) -> None:
        if self._db_created:
            ac.drop_database(self.metadata_db)
            self._db_created = False

    def base_env(self) -> dict[str, str]:
        # The scheduler must create asset-triggered runs (receipts_review), so the job schedule
        # is on; the one scheduled receipts_daily run it adds (yesterday, no receipts) is harmless.
        return {**super().base_env(), "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4", "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
                # a machine shared with other test runs answers slowly at times
                "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "120",
                # log servers of their own: other deployments may run on this machine
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port)}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.log_port, self.trigger_log_port = ac.free_port(), ac.free_port()

    def token(self) -> str:
        request = urllib.request.Request(
            f"{self.base_url}/auth/token", method="POST",
            data=json.dumps({"username": USER, "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["access_token"]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def call(self, method: str, path: str, payload=None, *, token: str | None = "login") -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {self.token() if token == 'login' else token}"
        request = urllib.request.Request(self.base_url + path, method=method, headers=headers,
                                         data=None if payload is None else json.dumps(payload).encode())
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, method: str, path: str, payload=None) -> dict:
        status, body = self.call(method, path, payload)
        assert status < 300, f"{method} {path}: {status} {body[:2000]!r}"
        return json.loads(body)


def _services_reachable() -> str | None:
    try:
        ac.query("postgres", "SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "no server to test against"
        return f"PostgreSQL at {ac.PG_HOST}:{ac.PG_PORT} unreachable: {exc}"
    return None


def put_receipt(root: Path, day: dt.date, name: str, data: bytes) -> str:
    folder = root / "incoming" / f"dt={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def synthetic(seed: int, date: str) -> bytes:
    from extractor.testing.synthetic import render_receipt

    return render_receipt(seed, date=date)[0]


@pytest.fixture(scope="module")
def review_cluster(tmp_path_factory):
    if reason := _services_reachable():
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("review-loop")
    warehouse_db = f"receipts_review_wh_{os.urandom(5).hex()}"
    ac.create_database(warehouse_db)
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    cluster = LocalCluster(work_dir=root / "cluster", dags_folder=REPO / "dags", extra_env={
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO / "include"),
        "RECEIPT_EXTRACTOR": "ocr",
        "RECEIPT_SOURCE": str(root / "incoming"),
        "RECEIPT_WAREHOUSE_URL": ac.pg_url(warehouse_db),
        "RECEIPT_MODEL_CACHE": str(root / "models"),
        "RECEIPT_STAGING_DIR": str(root / "staging"),
        "RECEIPT_DATA_DOCS_DIR": "off",
        "RECEIPT_TASK_RETRIES": "0",
        # the OCR reader gives 0.97-0.999 on synthetic receipts: above every one of them
        "RECEIPT_REVIEW_MIN_CONFIDENCE": "0.999",
        "RECEIPT_THRESHOLDS": json.dumps({"max_quarantine_rate_alert": 0.9,
                                          "max_quarantine_rate_fail": 1.0}),
    })
    cluster.root, cluster.warehouse_db = root, warehouse_db
    keep_logs = os.environ.get("RECEIPT_REVIEW_KEEP_CLUSTER")  # a folder: logs copied there
    try:
        with cluster:
            cluster.airflow("db", "migrate")
            cluster.airflow("pools", "set", "gpu", "2", "extract tasks")
            # the api-server first: the scheduled run the scheduler creates at once needs its
            # execution API
            cluster.start("api-server", "api-server", "--port", str(cluster.api_port), "--workers", "1")
            cluster.wait_http_ok(f"{cluster.base_url}/api/v2/monitor/health", STARTUP_TIMEOUT_S)
            cluster.start("scheduler", "scheduler")
            cluster.start("triggerer", "triggerer")
            cluster.start("dag-processor", "dag-processor")
            cluster.wait_for("both DAGs to be parsed", lambda: len(cluster.metadata(
                "SELECT dag_id FROM serialized_dag WHERE dag_id IN ('receipts_daily', "
                "'receipts_review')")) == 2, STARTUP_TIMEOUT_S)
            yield cluster
            forced = cluster.stop_all()
            assert forced == [] and cluster.stray_processes() == [], forced
    finally:
        ac.drop_database(warehouse_db)
        if keep_logs:
            shutil.copytree(root / "cluster", keep_logs, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.db", "*.sock"))
        shutil.rmtree(root / "cluster", ignore_errors=True)


def run_day(cluster: LocalCluster, day: dt.date) -> None:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    run_id = f"it_review_{day.isoformat()}"
    cluster.json("POST", "/api/v2/dags/receipts_daily/dagRuns", {
        "dag_run_id": run_id, "logical_date": start.isoformat(),
        "data_interval_start": start.isoformat(),
        "data_interval_end": (start + dt.timedelta(days=1)).isoformat()})
    state = cluster.wait_for(f"{run_id} to finish", lambda: [s for (s,) in cluster.metadata(
        "SELECT state FROM dag_run WHERE run_id = %s", (run_id,)) if s in ("success", "failed")],
        RUN_TIMEOUT_S)
    assert state == ["success"], cluster.diagnostics()


def waiting_forms(cluster: LocalCluster, count: int) -> list[tuple[str, int]]:
    """(run id, map index) of review tasks waiting for input, once ``count`` of them wait."""
    def waiting():
        rows = cluster.metadata(
            "SELECT run_id, map_index FROM task_instance WHERE dag_id = 'receipts_review' "
            "AND task_id = 'review_receipt' AND state = 'awaiting_input' ORDER BY map_index")
        return rows if len(rows) == count else None
    return cluster.wait_for(f"{count} review forms to wait for input", waiting, RUN_TIMEOUT_S)


def parked_exits_processed(cluster: LocalCluster, run_id: str, map_indexes) -> None:
    """Wait until the scheduler has taken in the exit of each form's parking process.

    Airflow 3.3 race (scheduler_job_runner.process_executor_events): if a form is answered
    so fast that its task is already queued or running again when the scheduler reads the
    executor event of the process that parked it (same try number), the task is taken as
    "killed externally" and failed. People answer minutes later; this test answers at once,
    so it waits for those events first."""
    log = cluster.logs_dir / "scheduler.log"

    def seen():
        text = log.read_text(errors="replace")
        return all(f"task_id='review_receipt', run_id='{run_id}', try_number=1, map_index={i})" in text
                   for i in map_indexes)
    cluster.wait_for("the scheduler to see the forms' parking processes exit", seen, RUN_TIMEOUT_S, 1)


def hitl_path(run_id: str, map_index: int) -> str:
    return (f"/api/v2/dags/receipts_review/dagRuns/{run_id}/taskInstances/review_receipt/"
            f"{map_index}/hitlDetails")


def wait_review_run_done(cluster: LocalCluster, run_id: str) -> None:
    state = cluster.wait_for("the review run to finish", lambda: [s for (s,) in cluster.metadata(
        "SELECT state FROM dag_run WHERE dag_id = 'receipts_review' AND run_id = %s", (run_id,))
        if s in ("success", "failed")], RUN_TIMEOUT_S)
    assert state == ["success"], cluster.diagnostics()


def test_rest_answers_reach_the_warehouse_and_the_eval_dataset(review_cluster):
    cluster, day = review_cluster, dt.date(2026, 3, 1)
    low = put_receipt(cluster.root, day, "low.jpg", synthetic(3, "2026-03-01"))
    future = put_receipt(cluster.root, day, "future.jpg", synthetic(4, "2027-06-01"))
    broken = put_receipt(cluster.root, day, "broken.jpg", b"this is not an image")
    run_day(cluster, day)
    wh = cluster.warehouse_db
    assert ac.query(wh, "SELECT receipt_id, needs_review FROM receipts") == [(low, True)]
    assert sorted(r[0] for r in ac.query(wh, "SELECT receipt_id FROM quarantine")) == sorted([future, broken])

    forms = waiting_forms(cluster, 2)  # the broken file's image cannot be shown: no form
    details = {}
    for run_id, index in forms:
        detail = cluster.json("GET", hitl_path(run_id, index))
        receipt_id = next(r for r in (low, future) if r in detail["body"])
        details[receipt_id] = (run_id, index, detail)
    assert set(details) == {low, future}
    _, _, form = details[low]
    assert form["options"] == ["approve", "correct", "reject"] and not form["multiple"]
    assert form["subject"].startswith("Low-confidence receipt " + low[:12])
    assert "low confidence (< 0.999): date" in form["body"] and "**Raw model output:**" in form["body"]
    assert f"(/receipts-review/images/{low})" in form["body"]
    params = form["params"]
    assert params["total"]["schema"]["type"] == ["null", "number"] and params["total"]["value"] > 0
    assert params["date"]["value"] == "2026-03-01" and params["date"]["schema"]["format"] == "date"
    assert "failed expectations" in details[future][2]["body"]

    # the image, through the plugin endpoint, behind Airflow's auth
    status, image = cluster.call("GET", f"/receipts-review/images/{low}")
    assert status == 200 and hashlib.sha256(image).hexdigest() == low
    assert cluster.call("GET", f"/receipts-review/images/{low}", token=None)[0] == 401
    assert cluster.call("GET", f"/receipts-review/images/{'0' * 64}")[0] == 404

    # answer as the UI does: PATCH the HITL detail with the chosen option and the form's values
    parked_exits_processed(cluster, forms[0][0], [index for _, index in forms])
    model_total = params["total"]["value"]
    values = {k: v["value"] for k, v in params.items()}
    run_id, index, _ = details[low]
    cluster.json("PATCH", hitl_path(run_id, index), {
        "chosen_options": ["correct"], "params_input": {**values, "total": 999.5}})
    run_id, index, rejected = details[future]
    cluster.json("PATCH", hitl_path(run_id, index), {
        "chosen_options": ["reject"],
        "params_input": {k: v["value"] for k, v in rejected["params"].items()}})
    wait_review_run_done(cluster, run_id)

    assert sorted(ac.query(wh, "SELECT receipt_id, decision, total, corrected_fields::text, reviewer "
                               "FROM corrections")) == sorted([
        (low, "correct", Decimal("999.5000"), '["total"]', USER),
        (future, "reject", Decimal(str(rejected["params"]["total"]["value"])).quantize(Decimal("0.0001")),
         "[]", USER)])
    current = ac.query(wh, "SELECT receipt_id, total, values_from, review_decision, reviewed_by "
                           "FROM receipts_current")
    assert current == [(low, Decimal("999.5000"), "reviewer", "correct", USER)]
    # lineage: the model's row is kept as the model wrote it; the rejected receipt stays quarantined
    model_row_total = Decimal(str(model_total)).quantize(Decimal("0.0001"))
    assert ac.query(wh, "SELECT total FROM receipts") == [(model_row_total,)]
    assert len(ac.query(wh, "SELECT 1 FROM quarantine WHERE receipt_id = %s", (future,))) == 1

    out = cluster.root / "labels"
    env = {**os.environ, "PYTHONPATH": str(REPO / "include")}
    done = subprocess.run([sys.executable, "-m", "extractor", "export-labels", "--warehouse",
                           ac.pg_url(wh), "--output-dir", str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["exported"] == 1
    label = json.loads((out / "labels" / f"{low}.json").read_text())
    assert label["total"] == "999.50" and label["review"]["decision"] == "correct"
    assert hashlib.sha256((out / label["image"]).read_bytes()).hexdigest() == low
    done = subprocess.run([sys.executable, "-m", "extractor", "eval", "--dataset", str(out),
                           "--model", "ocr", "--output-dir", str(cluster.root / "eval")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads((cluster.root / "eval" / "eval.json").read_text())
    assert scores["receipts"] == 1
    assert scores["fields"]["total"]["exact"] == 0.0  # the model still reads its own total
    assert scores["fields"]["date"]["exact"] == 1.0


def chromium_or_skip():
    """A headless Chrome driver factory, or a skip naming what is missing."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        pytest.skip(f"real-browser test needs {', '.join(missing)}: apt-get install -y chromium "
                    "chromium-driver; pip install selenium (make test installs them)")

    def start():
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,2200"):
            options.add_argument(flag)
        service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
        return webdriver.Chrome(options=options, service=service)
    return start


def test_a_reviewer_corrects_the_total_in_a_real_browser(review_cluster, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    start_browser = chromium_or_skip()
    cluster, day = review_cluster, dt.date(2026, 3, 2)
    receipt_id = put_receipt(cluster.root, day, "next-day.jpg", synthetic(5, "2026-03-02"))
    run_day(cluster, day)
    [(run_id, index)] = waiting_forms(cluster, 1)
    shots = Path(os.environ.get("RECEIPT_REVIEW_SCREENSHOTS", tmp_path))
    driver = start_browser()
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(f"{cluster.base_url}/auth/login")
        wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(USER)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
        wait.until(lambda d: "/auth/login" not in d.current_url)

        driver.get(f"{cluster.base_url}/dags/receipts_review/runs/{run_id}/tasks/review_receipt/"
                   f"mapped/{index}/required_actions")
        image = wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, f"img[src*='/receipts-review/images/{receipt_id}']")))
        # the image really loaded, through the plugin endpoint with the session cookie
        wait.until(lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image) > 100)
        assert "Low-confidence receipt" in driver.page_source
        # a number field: chakra's number input, found through its increment button
        increment = wait.until(ec.presence_of_element_located((By.ID, "number-input:element_total:inc")))
        total = driver.find_element(By.ID, increment.get_attribute("aria-controls"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
        driver.save_screenshot(str(shots / "review-form.png"))
        total.send_keys(Keys.CONTROL, "a")
        total.send_keys("777.25")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", total)
        driver.save_screenshot(str(shots / "review-form-total.png"))
        button = driver.find_element(By.CSS_SELECTOR, "button[data-testid='hitl-option-correct']")
        parked_exits_processed(cluster, run_id, [index])
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        button.click()
        wait_review_run_done(cluster, run_id)
    except Exception:
        driver.save_screenshot(str(shots / "review-form-failure.png"))
        (shots / "review-form-failure.html").write_text(driver.page_source)
        raise
    finally:
        driver.quit()
    assert ac.query(cluster.warehouse_db, "SELECT decision, total, reviewer FROM corrections "
                                          "WHERE receipt_id = %s", (receipt_id,)) == [
        ("correct", Decimal("777.2500"), USER)]
    assert ac.query(cluster.warehouse_db, "SELECT total, values_from FROM receipts_current "
                                          "WHERE receipt_id = %s", (receipt_id,)) == [
        (Decimal("777.2500"), "reviewer")]
