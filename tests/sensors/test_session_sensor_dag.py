"""The session-sensor example DAG, run with ``dag.test()`` against the sandbox (the trigger runs in line)."""

from __future__ import annotations

import threading
import time

from airflow_provider_bitrix24.sandbox.state import SEED
from tests.conftest import run_dag

DAG_ID = "example_bitrix24_session_sensor"
HISTORY = "imopenlines.session.history.get"


class Conversation(threading.Thread):
    """
    The client writes, then an operator replies, once the sensor has had its first look at the session.

    If the sensor never looks (the run failed early), the messages are added anyway after ``give_up`` seconds so
    the run cannot hang; ``stop()`` cancels a conversation that has not happened yet. ``give_up`` leaves room for
    Airflow's cold start on a loaded machine (half a minute and more), and stays below pytest's 300 s timeout.
    """

    def __init__(self, sandbox, give_up: float = 240.0) -> None:
        super().__init__(daemon=True)
        self.sandbox = sandbox
        self.give_up = give_up
        self.stopped = threading.Event()
        self.first_poll: float | None = None
        self.reply_id: int | None = None
        self.reply_at: float | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.give_up
        while time.monotonic() < deadline and not self.stopped.is_set():
            if self.sandbox.stats()["by_method"].get(HISTORY, 0) > 0:
                self.first_poll = time.monotonic()
                break
            time.sleep(0.05)
        if self.stopped.wait(1.0):
            return
        session = SEED.support_latest_session_id
        self.sandbox.add_message(session, SEED.client_user_ids[0], "The Observers button is still missing")
        if self.stopped.wait(1.0):
            return
        self.reply_id = self.sandbox.add_message(
            session, SEED.operator_ids[0], "Update the mobile app to the latest version, then look again."
        )
        self.reply_at = time.monotonic()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def test_example_dag_waits_for_the_reply_and_saves_it(sandbox, webhook_conn, airflow_db):
    conversation = Conversation(sandbox)
    conversation.start()
    try:
        result = run_dag(DAG_ID)
    finally:
        conversation.stop()
    assert result.state == "success", result.tasks
    assert conversation.first_poll is not None  # the reply appeared only after the sensor started waiting
    reply = conversation.reply_id
    assert reply is not None
    assert result.tasks["wait_for_reply"][0] == "success"
    (message,) = result.xcoms["wait_for_reply"]
    assert message["id"] == reply
    assert message["author_type"] == "operator"
    assert message["session_id"] == SEED.support_latest_session_id
    assert result.xcoms["save_reply"] == [reply]
    saved = [a for a in sandbox.quick_answers() if a["message_id"] == reply]
    assert len(saved) == 1
    assert saved[0]["text"].startswith("Update the mobile app")


def test_permanent_error_fails_the_run_at_once_despite_retries(sandbox, webhook_conn, airflow_db):
    started = time.monotonic()
    result = run_dag(DAG_ID, run_conf={"session_id": SEED.restricted_session_id})
    elapsed = time.monotonic() - started
    assert result.state == "failed"
    # retries=2 and timeout=3600, yet one try that ends at once: ACCESS_DENIED will not go away by waiting.
    assert result.tasks["wait_for_reply"] == ("failed", 1)
    assert result.tasks["save_reply"][0] == "upstream_failed"
    stats = sandbox.stats()
    assert stats["by_method"] == {HISTORY: 1}
    # From the portal's one answer to the end of the task: the start of the task (and of dag.test()) is Airflow's
    # cold start, which takes half a minute on a loaded machine and says nothing about the sensor.
    ((answered_at, _, _),) = stats["log"]
    failed_after = _sensor_task_end() - answered_at
    assert failed_after < 10
    print(
        f"\nACCESS_DENIED failed the sensor task {failed_after:.2f} s after the portal's answer "
        f"(timeout=3600, retries=2); the whole dag.test() took {elapsed:.1f} s"
    )


def _sensor_task_end() -> float:
    """When the sensor task ended, as a Unix time (Airflow 2's dag.test() sets no start_date, but an end_date)."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == DAG_ID, TaskInstance.task_id == "wait_for_reply")
            .order_by(TaskInstance.end_date.desc())
            .first()
        )
        assert ti is not None
        assert ti.end_date is not None
        return ti.end_date.timestamp()
