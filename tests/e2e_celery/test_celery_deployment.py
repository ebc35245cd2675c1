"""
One portal budget for a whole distributed Airflow: a CeleryExecutor deployment against one standard-plan portal.

Started and stopped by the test, all on loopback and in temporary directories: PostgreSQL (the metadata database),
Redis (the Celery broker, and the shared limiter of the Bitrix24 connection through ``redis_conn_id``), the
sandbox portal with the standard limits (burst 50, 2 requests/s) and access tokens that live
:data:`TOKEN_TTL` seconds, and Airflow 3: api-server, scheduler, dag-processor, two Celery workers and two
triggerers, each a process of its own.

The DAG ``bitrix24_test_celery_fanout`` (tests/dags) runs parallel save tasks that make one call per message
(the bucket is the bottleneck) and 100+ deferred ``SessionHistorySensor`` waits, split across the triggerers, on
an OAuth connection whose access token expires several times during the run. Once every wait is deferred the
portal gets the awaited messages.

The run happens once (module fixture); each pass criterion is a test of its own, so the report names the ones
that fail. A wait that times out, or a run that stalls, does not end the test: the figures are taken as they
stand, printed as soon as everything has stopped, and written as JSON to ``$BITRIX24_E2E_CELERY_FIGURES`` when
that is set; ``BITRIX24_E2E_KEEP=1`` keeps the Airflow home with every log. Run with ``make e2e-celery``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
from airflow_provider_bitrix24.sandbox.state import POOL_CLIENT_ID
from tests.helpers import ROOT, token_variable
from tests.support.airflow_processes import AirflowProcesses
from tests.support.services import PostgresServer, RedisServer, ServiceMissing
from tests.support.waiting import free_port, wait_for

#: The deployment starts once for the module; its setup (the whole run) counts against the first test's timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.e2e_celery, pytest.mark.timeout(1200)]

DAG_FILE = ROOT / "tests" / "dags" / "bitrix24_test_celery_fanout.py"
DAG_ID = "bitrix24_test_celery_fanout"
CONN_ID = "bitrix24_celery"
REDIS_CONN_ID = "bitrix24_redis"
#: Tasks and waits of the DAG (kept in step with the DAG file, which is checked below).
SAVE_TASKS, MESSAGES_PER_TASK, SENSORS = 4, 60, 104
#: Lifetime of the portal's access tokens: several expire during the run.
TOKEN_TTL = 60.0
WORKERS, WORKER_CONCURRENCY = 2, 8
TRIGGERERS = 2
#: Each triggerer takes at most this many triggers, so that the waits are split across both.
TRIGGERER_CAPACITY = SENSORS // 2 + 8
BURST, PER_SECOND = 50, 2.0
#: Pass: the portal's busy time is within this factor of the bucket's ideal for the requests made.
IDEAL_FACTOR = 1.15
#: Waits for the sensors to defer and for the run to end; past them the figures are taken as they stand.
DEFER_TIMEOUT, RUN_TIMEOUT = 400.0, 300.0
#: The run counts as stalled when neither the portal sees a request nor a task changes state for this long
#: (the triggerers poll every 10 s while any wait is deferred).
STALL_S = 90.0
#: Airflow's "Triggerer's async thread was blocked for X seconds" warning, and the most X may be here.
BLOCKED = re.compile(r"async thread was blocked for (\d+(?:\.\d+)?) seconds")
MAX_BLOCKED_S = 2.0
PRE_DEFERRAL = {None, "none", "scheduled", "queued", "running", "up_for_retry", "up_for_reschedule", "restarting"}


class GrantRecorder:
    """Wraps the portal's token endpoint: when each grant was asked for, and whether it issued a pair."""

    def __init__(self, portal: SandboxPortal) -> None:
        self.calls: list[tuple[float, str | None]] = []  # (unix time, error code or None)
        self.issued: list[str] = []  # every access and refresh token issued (never printed)
        self._lock = threading.Lock()
        oauth = portal.engine.oauth
        original = oauth.grant

        def grant(*args: Any, **kwargs: Any) -> dict[str, Any]:
            stamp = time.time()
            try:
                answer = original(*args, **kwargs)
            except Exception as exc:
                with self._lock:
                    self.calls.append((stamp, str(getattr(exc, "code", type(exc).__name__))))
                raise
            with self._lock:
                self.calls.append((stamp, None))
                self.issued += [answer["access_token"], answer["refresh_token"]]
            return answer

        oauth.grant = grant  # type: ignore[method-assign]


class Deployment(AirflowProcesses):
    """Airflow 3 with the CeleryExecutor in a temporary home; the metadata database is PostgreSQL."""

    cli_timeout = 180

    def __init__(self, home: Path, env: dict[str, str], postgres: PostgresServer) -> None:
        super().__init__(home, env)
        self.postgres = postgres
        self._db: Any = None

    def api(self, verb: str, path: str, body: dict[str, Any]) -> Any:
        """Call the REST API (every user is an admin here: ``simple_auth_manager_all_admins``)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.env['AIRFLOW__API__PORT']}{path}",
            data=json.dumps(body).encode(),
            method=verb,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"null")

    def start(self, api_port: int) -> None:
        components: dict[str, list[str]] = {
            "api-server": ["api-server", "--port", str(api_port), "--workers", "2"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
        }
        for number in range(1, WORKERS + 1):
            components[f"worker-{number}"] = [
                "celery",
                "worker",
                "--celery-hostname",
                f"worker{number}@%h",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--skip-serve-logs",
                "--without-gossip",
                "--without-mingle",
            ]
        for number in range(1, TRIGGERERS + 1):
            components[f"triggerer-{number}"] = [
                "triggerer",
                "--capacity",
                str(TRIGGERER_CAPACITY),
                "--skip-serve-logs",
            ]
        self.launch(components)

    def stop(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        super().stop()

    def query(self, sql: str, *params: object) -> list[tuple]:
        if self._db is None:
            self._db = self.postgres.connect()
        with self._db.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


def _refresh_figures(grants: GrantRecorder, issued_at: float, last_request: float) -> dict[str, Any]:
    """
    Token-endpoint calls against expiries.

    The access tokens in use form a chain: the pair issued before the run, then one pair per successful refresh.
    A token of the chain *expired during the run* when its lifetime ended before the portal's last request (some
    request came after it and needed a newer token). One refresh per expiry means: as many token-endpoint calls as
    expired tokens, all of them successful.
    """
    succeeded = sorted(stamp for stamp, error in grants.calls if error is None)
    chain = [issued_at, *succeeded]
    expiries = sum(1 for issued in chain if issued + TOKEN_TTL <= last_request)
    failed: dict[str, int] = {}
    for _stamp, error in grants.calls:
        if error is not None:
            failed[error] = failed.get(error, 0) + 1
    return {
        "refresh_calls": len(grants.calls),
        "refreshes_ok": len(succeeded),
        "refresh_errors": failed,
        "expiries": expiries,
    }


@pytest.fixture(scope="module")
def run(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Start everything, run the DAG once, stop everything; the figures of the run."""
    import airflow

    if int(airflow.__version__.split(".")[0]) < 3:
        pytest.skip("the Celery deployment runs the Airflow 3 components")
    pytest.importorskip("airflow.providers.celery", reason="needs the 'celery' extra (make e2e-celery)")
    pytest.importorskip("psycopg2", reason="needs the 'celery' extra (make e2e-celery)")
    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - started - sum(phases.values()), 1)

    keep = os.environ.get("BITRIX24_E2E_KEEP") is not None
    home = Path(tempfile.mkdtemp(prefix="bitrix24-e2e-celery-"))
    pg_dir = Path(tempfile.mkdtemp(prefix="bitrix24-e2e-celery-pg-"))
    (home / "dags").mkdir()
    shutil.copy(DAG_FILE, home / "dags" / DAG_FILE.name)
    redis = RedisServer(home / "redis")
    postgres: PostgresServer | None = None
    portal: SandboxPortal | None = None
    deployment: Deployment | None = None
    try:
        try:
            redis.start()
            postgres = PostgresServer(pg_dir).start()
        except ServiceMissing as exc:
            pytest.fail(str(exc))
        portal = SandboxPortal(
            SandboxConfig.preset("standard", access_token_ttl=TOKEN_TTL, extra_sessions=SENSORS, bulk_messages=600)
        ).start()
        grants = GrantRecorder(portal)
        phase("services_s")

        # The connection holds a pair issued now; the run starts from a fresh pair stored just before the trigger.
        connection = json.loads(portal.airflow_conn_json("oauth"))
        connection["extra"]["redis_conn_id"] = REDIS_CONN_ID
        secrets = [
            portal.oauth_client_secret,
            connection["extra"]["refresh_token"],
            connection["extra"]["access_token"],
        ]
        api_port = free_port()
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "128",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "256",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.sqlalchemy_url("psycopg2"),
            "AIRFLOW__CELERY__BROKER_URL": redis.url(0),
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres.sqlalchemy_url("psycopg2"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            # Two cores run everything here: give the broker and the Execution API time to answer under load.
            "AIRFLOW__CELERY__OPERATION_TIMEOUT": "30",
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": "e2e-celery-jwt-secret-not-for-production-0000",
            "AIRFLOW__API__SECRET_KEY": "e2e-celery-secret-key-not-for-production",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "128",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
            f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}": json.dumps(redis.airflow_conn(db=1)),
            "NO_PROXY": "127.0.0.1,localhost,::1",
            "no_proxy": "127.0.0.1,localhost,::1",
        }
        env.pop("BITRIX24_TEST_AIRFLOW_HOME", None)
        deployment = Deployment(home, env, postgres)
        deployment.cli("db", "migrate", timeout=300)
        phase("db_migrate_s")
        deployment.start(api_port)

        def healthy() -> bool:
            deployment.alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/api/v2/monitor/health", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for("the api-server", healthy, 180)
        wait_for("the DAG to be parsed", lambda: deployment.query("select 1 from dag where dag_id = %s", DAG_ID), 180)
        wait_for(
            f"{TRIGGERERS} triggerers to heartbeat",
            lambda: (
                deployment.query("select count(*) from job where job_type = 'TriggererJob' and state = 'running'")[0][0]
                >= TRIGGERERS
            ),
            120,
        )
        phase("airflow_start_s")

        state = portal.engine.state
        with state.lock:
            after_message_id = max(state.messages)
        seed = portal.seed
        conf = {
            "chat_id": seed.bulk_chat_id,
            "first_message_id": seed.bulk_message_ids.start,
            "first_session_id": seed.extra_session_ids.start,
            "after_message_id": after_message_id,
        }
        # A fresh pair where the hook looks first (the Variable it keeps rotated tokens in), so that the access
        # token's lifetime starts with the run.
        pair = portal.issue_oauth_tokens()
        issued_at = time.time()
        secrets += [pair["access_token"], pair["refresh_token"]]
        stored = json.dumps(
            {
                "access_token": pair["access_token"],
                "refresh_token": pair["refresh_token"],
                "expires_at": pair["expires"],
            }
        )
        deployment.api("POST", "/api/v2/variables", {"key": token_variable(connection), "value": stored})
        run_id = deployment.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})[
            "dag_run_id"
        ]
        triggered = time.time()

        def sensor_states() -> dict[str, str | None]:
            deployment.alive()
            rows = deployment.query(
                "select task_id, state from task_instance where dag_id = %s and run_id = %s and task_id like 'wait_%%'",
                DAG_ID,
                run_id,
            )
            return dict(rows)

        def all_waiting() -> dict[str, str | None] | None:
            states = sensor_states()
            if len(states) == SENSORS and not any(s in PRE_DEFERRAL for s in states.values()):
                return states
            return None

        # A wait that times out is recorded and the run goes on, so that the figures are taken in any case.
        timeouts: list[str] = []

        def soft_wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
            try:
                return wait_for(what, check, timeout, interval=2.0)
            except AssertionError:
                timeouts.append(what)
                return None

        # Only once every wait is deferred (or over) do the awaited messages appear.
        states_at_deferral = soft_wait("every sensor to defer", all_waiting, DEFER_TIMEOUT) or sensor_states()

        def current_split() -> dict[str, int]:
            rows = deployment.query(
                "select coalesce(cast(triggerer_id as text), 'unassigned'), count(*) from trigger group by 1"
            )
            return dict(rows)

        split = (
            soft_wait(
                "the triggers to be assigned to triggerers",
                lambda: "unassigned" not in (s := current_split()) and s,
                60,
            )
            or current_split()
        )
        deferred_at = time.time()
        for number in range(SENSORS):
            portal.add_message(seed.extra_session_ids.start + number, POOL_CLIENT_ID, f"Reply number {number}")

        progress: dict[str, Any] = {"mark": None, "since": time.monotonic()}

        def finished() -> str | None:
            deployment.alive()
            rows = deployment.query("select state from dag_run where run_id = %s", run_id)
            if rows and rows[0][0] in ("success", "failed"):
                return rows[0][0]
            states = deployment.query("select state, count(*) from task_instance where run_id = %s group by 1", run_id)
            mark = (portal.stats()["requests"], sorted(states, key=str))
            if mark != progress["mark"]:
                progress.update(mark=mark, since=time.monotonic())
            elif time.monotonic() - progress["since"] > STALL_S:
                timeouts.append(f"the run stalled: no request and no task change for {STALL_S:.0f} s")
                return "stalled"
            return None

        final = soft_wait("the DAG run to finish", finished, RUN_TIMEOUT) or "not finished"
        phase("run_s")
        tasks = dict(deployment.query("select task_id, state from task_instance where run_id = %s", run_id))
        (run_start, run_end), *_ = deployment.query(
            "select start_date, end_date from dag_run where run_id = %s", run_id
        )

        stats = portal.stats()
        times = [entry[0] for entry in stats["log"]]
        first_request, last_request = (min(times), max(times)) if times else (triggered, triggered)
        requests = stats["requests"]
        ideal = max(0.0, (requests - BURST) / PER_SECOND)
        busy = last_request - first_request
        answers = portal.quick_answers()
        wanted = set(range(conf["first_message_id"], conf["first_message_id"] + SAVE_TASKS * MESSAGES_PER_TASK))
        saved_counts = {m: 0 for m in wanted}
        for answer in answers:
            if answer["message_id"] in saved_counts:
                saved_counts[answer["message_id"]] += 1
        logs = deployment.logs()
        failed_tasks = sorted(t for t, s in tasks.items() if s != "success")
        figures: dict[str, Any] = {
            "dag_run": final,
            "tasks": len(tasks),
            "tasks_failed": len(failed_tasks),
            "failed_task_ids": failed_tasks[:20],
            "requests": requests,
            "requests_by_status": stats["by_status"],
            "query_limit_exceeded": stats["errors"].get("QUERY_LIMIT_EXCEEDED", 0),
            "expired_token_answers": stats["errors"].get("expired_token", 0),
            "errors": stats["errors"],
            "by_method": stats["by_method"],
            "messages_to_save": len(wanted),
            "saved_once": sum(1 for c in saved_counts.values() if c == 1),
            "saved_twice_or_more": sum(1 for c in saved_counts.values() if c > 1),
            "not_saved": sum(1 for c in saved_counts.values() if c == 0),
            **_refresh_figures(grants, issued_at, last_request),
            "token_ttl_s": TOKEN_TTL,
            "ideal_s": round(ideal, 1),
            "portal_busy_s": round(busy, 1),
            "busy_vs_ideal": round(busy / ideal, 3) if ideal else None,
            "dag_run_s": round((run_end - run_start).total_seconds(), 1) if run_start and run_end else None,
            "dag_run_vs_ideal": round((run_end - run_start).total_seconds() / ideal, 3)
            if run_start and run_end and ideal
            else None,
            "trigger_to_all_deferred_s": round(deferred_at - triggered, 1),
            "states_at_deferral": _count(states_at_deferral.values()),
            "triggers_per_triggerer": split,
            "secret_in_logs": any(secret and secret in logs for secret in secrets + grants.issued),
            "triggerer_loop_stalls": sum(
                (home / f"triggerer-{n}.log").read_text(errors="replace").count("event loop appears deadlocked")
                for n in range(1, TRIGGERERS + 1)
            ),
            # Airflow's own watchdog of the trigger runner's loop: it sleeps 0.1 s and logs when it woke up late.
            "triggerer_blocked_s": sorted(
                float(seconds)
                for n in range(1, TRIGGERERS + 1)
                for seconds in BLOCKED.findall((home / f"triggerer-{n}.log").read_text(errors="replace"))
            ),
            "timeouts": timeouts,
            "home": str(home) if keep else None,
        }
    finally:
        if deployment is not None:
            deployment.stop()
        if portal is not None:
            portal.stop()
        if postgres is not None:
            postgres.stop()
        redis.stop()
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(pg_dir, ignore_errors=True)
    phase("teardown_s")
    figures["phases_s"] = phases
    figures["total_s"] = round(time.monotonic() - started, 1)
    _report(request, figures)
    return figures


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def _report(request: pytest.FixtureRequest, figures: dict[str, Any]) -> None:
    lines = [
        "",
        "bitrix24 e2e-celery figures:",
        f"  DAG run {figures['dag_run']}; {figures['tasks']} tasks, {figures['tasks_failed']} not successful "
        f"{figures['failed_task_ids'] or ''}",
        f"  requests {figures['requests']}, 503 QUERY_LIMIT_EXCEEDED {figures['query_limit_exceeded']}, "
        f"expired_token {figures['expired_token_answers']}; by status {figures['requests_by_status']}",
        f"  messages saved once {figures['saved_once']}/{figures['messages_to_save']}, twice or more "
        f"{figures['saved_twice_or_more']}, not saved {figures['not_saved']}",
        f"  token refreshes: {figures['refresh_calls']} token-endpoint calls ({figures['refreshes_ok']} ok, errors "
        f"{figures['refresh_errors']}) for {figures['expiries']} expiries (access token lifetime "
        f"{figures['token_ttl_s']:g} s)",
        f"  time: portal busy {figures['portal_busy_s']} s vs ideal {figures['ideal_s']} s "
        f"({figures['busy_vs_ideal']}x); DAG run {figures['dag_run_s']} s ({figures['dag_run_vs_ideal']}x)",
        f"  waits: all deferred {figures['trigger_to_all_deferred_s']} s after the trigger "
        f"{figures['states_at_deferral']}; triggers per triggerer {figures['triggers_per_triggerer']}",
        f"  triggerer event-loop stalls reported: {figures['triggerer_loop_stalls']}; Airflow's loop watchdog: "
        f"{len(figures['triggerer_blocked_s'])} warning(s), longest {max(figures['triggerer_blocked_s'], default=0)} s; "
        f"waits timed out: "
        f"{figures['timeouts'] or 'none'}",
        f"  phases {figures['phases_s']}; total {figures['total_s']} s; secret in logs: {figures['secret_in_logs']}",
    ]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        for line in lines:
            if reporter is not None:
                reporter.write_line(line)
            else:  # pragma: no cover - without the terminal reporter
                print(line)
    target = os.environ.get("BITRIX24_E2E_CELERY_FIGURES")
    if target:
        Path(target).write_text(json.dumps(figures, indent=1, sort_keys=True, default=str) + "\n")


# --------------------------------------------------------------------------- the scenario is what it claims


def test_the_dag_file_matches_the_scenario():
    """The sizes this test reasons with are the ones of the DAG it runs."""
    text = DAG_FILE.read_text()
    for name, value in (("SAVE_TASKS", SAVE_TASKS), ("MESSAGES_PER_TASK", MESSAGES_PER_TASK), ("SENSORS", SENSORS)):
        assert f"\n{name} = {value}\n" in text


def test_the_waits_were_deferred_and_split_across_both_triggerers(run):
    assert run["states_at_deferral"].get("deferred", 0) >= 100, run["states_at_deferral"]
    assigned = {k: v for k, v in run["triggers_per_triggerer"].items() if k != "unassigned"}
    assert len(assigned) == TRIGGERERS, run["triggers_per_triggerer"]


def test_the_access_token_expired_during_the_run(run):
    assert run["expiries"] >= 2, run


# --------------------------------------------------------------------------- pass criteria


def test_pass_every_task_succeeds(run):
    assert run["tasks_failed"] == 0, run["failed_task_ids"]
    assert run["dag_run"] == "success"


def test_pass_no_503_from_the_portal(run):
    assert run["query_limit_exceeded"] == 0


def test_pass_every_message_saved_exactly_once(run):
    assert run["saved_once"] == run["messages_to_save"], run


def test_pass_one_token_refresh_per_expiry(run):
    assert run["refresh_calls"] == run["refreshes_ok"] == run["expiries"], run


def test_pass_within_115_of_the_buckets_ideal_time(run):
    """The portal's busy time (first to last request) against the bucket's least time for those requests."""
    assert run["dag_run"] == "success", "the run did not complete, so its time says nothing"
    assert run["busy_vs_ideal"] is not None, run
    assert run["busy_vs_ideal"] <= IDEAL_FACTOR, run


def test_pass_no_triggerer_event_loop_stall(run):
    """
    The triggerers never report their event loop stuck (a lock held across I/O the loop waits for), and Airflow's
    watchdog of the loop never saw it held for as long as a token request or a portal call takes. (It warns from
    0.2 s on, which two busy cores give now and then whatever the triggers do; those are listed, not failed.)
    """
    assert run["triggerer_loop_stalls"] == 0
    assert max(run["triggerer_blocked_s"], default=0.0) < MAX_BLOCKED_S, run["triggerer_blocked_s"]


def test_pass_no_secret_in_the_logs(run):
    assert run["secret_in_logs"] is False
