"""
The Bitrix24 connection form in a real Airflow 3 UI, driven in headless Chromium (``make browser``).

An Airflow 3 api-server runs on loopback with the simple auth manager and a known admin password, beside the
sandbox portal. Debian's Chromium (``/usr/bin/chromium``, installed by ``.ci/install-browser``) is driven by
Playwright; no browser is downloaded. The tests run in file order and share the UI: open Admin -> Connections ->
Add, choose Bitrix24 and check what a user sees, save the sandbox's webhook in the split form, press Test, use
the documented workaround, reopen the connection. Screenshots land in ``.artifacts/browser/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_bitrix24.sandbox import SandboxConfig, SandboxPortal
from tests.helpers import ROOT, oauth_connection
from tests.support.waiting import free_port, wait_for

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("BITRIX24_CHROMIUM", "/usr/bin/chromium")
#: Flags that keep Chromium off the network it cannot reach here, with a new empty profile per run.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / ".artifacts" / "browser"
ADMIN_USER, ADMIN_PASSWORD = "admin", "browser-test-password-0000"
CONN_ID = "bitrix24_ui"
TIMEOUT_MS = 60_000


@dataclass
class AirflowUI:
    """An Airflow 3 api-server on loopback, in a temporary home."""

    base_url: str
    home: Path
    env: dict[str, str]
    version: str

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check:
            assert proc.returncode == 0, f"airflow {args[:2]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc

    def add_connection(self, conn_id: str, conn: dict[str, Any]) -> None:
        self.cli("connections", "add", conn_id, "--conn-json", json.dumps(conn))

    def run_hook_dag(self, conn_id: str) -> tuple[str, str]:
        """Run the example hook DAG (real tasks) on a stored connection with ``airflow dags test``: state, output."""
        dag_id = "example_bitrix24_hook"
        shutil.copy(ROOT / "example_dags" / f"{dag_id}.py", self.home / "dags")
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", dag_id],
            env={**self.env, "BITRIX24_CONN_ID": conn_id},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        with sqlite3.connect(self.home / "airflow.db", timeout=30) as db:
            rows = db.execute("select state from dag_run where dag_id = ? order by id desc limit 1", (dag_id,))
            state = rows.fetchone()
        assert state is not None, f"no run of {dag_id}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return str(state[0]), proc.stdout + proc.stderr

    def hook_config(self, conn_id: str) -> dict[str, Any]:
        """What the hook makes of a stored connection, read in a separate process as a task would."""
        code = (
            "import json, sys\n"
            "from airflow.models.connection import Connection\n"
            "from airflow_provider_bitrix24.hooks.bitrix24 import Bitrix24Hook\n"
            "config = Bitrix24Hook.config_from_connection(Connection.get_connection_from_secrets(sys.argv[1]))\n"
            "print(json.dumps({'base_url': config.base_url, 'auth': type(config.auth).__name__,\n"
            "                  'rate_limit': [config.rate_limit.burst, config.rate_limit.per_second]}))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, conn_id], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def portal() -> Iterator[SandboxPortal]:
    portal = SandboxPortal(SandboxConfig.preset("unlimited")).start()
    yield portal
    portal.stop()


@pytest.fixture(scope="module")
def airflow_ui(portal: SandboxPortal) -> Iterator[AirflowUI]:
    import airflow

    if int(airflow.__version__.split(".")[0]) < 3:
        pytest.skip("Airflow 3's UI builds the connection form from the provider info")
    home = Path(tempfile.mkdtemp(prefix="bitrix24-browser-"))
    (home / "dags").mkdir()
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}))
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": "browser-jwt-secret-not-for-production-0000",
        "AIRFLOW__API__SECRET_KEY": "browser-secret-key-not-for-production",
        "NO_PROXY": "127.0.0.1,localhost,::1",
    }
    env.pop("BITRIX24_TEST_AIRFLOW_HOME", None)
    env.pop("AIRFLOW_CONN_BITRIX24_DEFAULT", None)
    ui = AirflowUI(f"http://127.0.0.1:{port}", home, env, airflow.__version__)
    ui.cli("db", "migrate")
    log = (home / "api-server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy() -> bool:
        assert server.poll() is None, f"the api-server exited; see {home / 'api-server.log'}"
        try:
            with urllib.request.urlopen(f"{ui.base_url}/api/v2/monitor/health", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for("the api-server", healthy, 240)
        yield ui
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()
        if os.environ.get("BITRIX24_BROWSER_KEEP") is None:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def page(airflow_ui: AirflowUI) -> Iterator[Any]:
    """A logged-in page of the Airflow UI in headless Chromium, with a new empty profile."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: run .ci/install-browser"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="bitrix24-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 1600},
            )
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            page.goto(f"{airflow_ui.base_url}/")
            page.get_by_label("Username").fill(ADMIN_USER)
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{airflow_ui.base_url}/")
            yield page
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _connections(page: Any, airflow_ui: AirflowUI) -> None:
    page.goto(f"{airflow_ui.base_url}/connections")
    page.get_by_role("button", name="Add Connection").wait_for()


def _open_add_form(page: Any, airflow_ui: AirflowUI) -> Any:
    _connections(page, airflow_ui)
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").first.fill("Bitrix24")
    page.keyboard.press("Enter")
    dialog.get_by_label("Portal or webhook URL").wait_for()
    return dialog


def _open_edit_form(page: Any, airflow_ui: AirflowUI, conn_id: str) -> Any:
    _connections(page, airflow_ui)
    page.get_by_role("row").filter(has_text=conn_id).get_by_role("button", name="Edit Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Portal or webhook URL").wait_for()
    return dialog


def _show_extra_fields(dialog: Any) -> None:
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    dialog.get_by_text("Rate limit", exact=True).wait_for()


def _press_test(page: Any, conn_id: str) -> tuple[Any, Any, str]:
    """Press the row's Test button; returns the request, the response and the text the user reads."""
    row = page.get_by_role("row").filter(has_text=conn_id)
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as answer:
        row.get_by_role("button", name="Test Connection").click()
    response = answer.value
    toast = page.locator("[data-scope=toast][data-part=root]").last
    toast.wait_for()
    return response.request, response, toast.inner_text()


@contextlib.contextmanager
def _port_sent_as_null(page: Any) -> Iterator[None]:
    """What Airflow with the fix (apache/airflow#73298) does: a connection without a port is tested as such."""

    def without_port_zero(route: Any) -> None:
        body = route.request.post_data_json
        if body.get("port") == 0:
            body["port"] = None
        route.continue_(post_data=json.dumps(body))

    page.route("**/api/v2/connections/test", without_port_zero)
    try:
        yield
    finally:
        page.unroute("**/api/v2/connections/test")


def test_the_add_form_shows_the_bitrix24_fields(page, airflow_ui):
    dialog = _open_add_form(page, airflow_ui)
    host = dialog.get_by_label("Portal or webhook URL")
    login = dialog.get_by_label("Webhook user ID")
    password = dialog.get_by_label("Webhook code")
    assert host.get_attribute("placeholder") == "https://your-portal.bitrix24.com; code in Webhook code (password)"
    assert login.get_attribute("placeholder") == "1: the number after /rest/ in the webhook URL"
    assert "masked" in password.get_attribute("placeholder")
    assert password.get_attribute("type") == "password"
    # Port and Schema mean nothing for Bitrix24: hidden.
    assert dialog.locator("input[name=port]").count() == 0
    assert dialog.locator("input[name=schema]").count() == 0
    page.screenshot(path=str(ARTIFACTS / "connection-form.png"), full_page=True)

    _show_extra_fields(dialog)
    auth_type = dialog.get_by_label("Auth type")
    auth_type.click()
    options = page.get_by_role("listbox").get_by_role("option")
    assert options.all_inner_texts() == ["Inbound webhook", "OAuth application"]  # no literal "null"
    options.first.click()  # (Escape would close the whole dialog)
    assert dialog.locator("input[name=element_auth_type]").input_value() == "webhook"
    help_text = dialog.get_by_text("A full webhook URL in Portal or webhook URL (host) works too")
    assert "in clear in the connections list" in help_text.inner_text()
    for secret in ("client_secret", "refresh_token", "access_token"):
        assert dialog.locator(f"#element_{secret}").get_attribute("type") == "password"
    assert dialog.locator("#element_rate_limit").input_value() == "standard"
    rate_help = dialog.get_by_text("standard (burst 50, then 2 requests/s)")
    assert '{"burst": N, "per_second": R}' in rate_help.inner_text()
    page.screenshot(path=str(ARTIFACTS / "connection-form-extra-fields.png"), full_page=True)
    dialog.get_by_role("button", name="Close").click()
    page.get_by_role("dialog").wait_for(state="detached")


def test_the_split_webhook_is_saved_and_its_code_never_shown(page, airflow_ui, portal):
    dialog = _open_add_form(page, airflow_ui)
    dialog.get_by_label("Connection ID").fill(CONN_ID)
    dialog.get_by_label("Portal or webhook URL").fill(portal.base_url)
    dialog.get_by_label("Webhook user ID").fill(str(portal.webhook_user_id))
    dialog.get_by_label("Webhook code").fill(portal.webhook_code)
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections") and r.request.method == "POST") as saved:
        dialog.get_by_role("button", name="Save").click()
    assert saved.value.status == 201, saved.value.text()
    page.get_by_role("dialog").wait_for(state="detached")
    row = page.get_by_role("row").filter(has_text=CONN_ID)
    row.wait_for()
    assert portal.base_url in row.inner_text()
    assert portal.webhook_code not in page.content()
    assert airflow_ui.hook_config(CONN_ID) == {
        "base_url": portal.base_url,
        "auth": "WebhookAuth",
        "rate_limit": [50, 2.0],
    }


def test_the_one_url_form_would_show_the_code_in_the_connections_list(page, airflow_ui, portal):
    # Why the form leads to the split form: the host column shows the full webhook URL, code included.
    airflow_ui.add_connection("bitrix24_one_url", {"conn_type": "bitrix24", "host": portal.webhook_url})
    _connections(page, airflow_ui)
    row = page.get_by_role("row").filter(has_text="bitrix24_one_url")
    assert portal.webhook_code in row.inner_text()
    airflow_ui.cli("connections", "delete", "bitrix24_one_url")


def test_the_test_button_of_airflow_3_3_2_is_refused_with_a_bare_bad_request(page, airflow_ui):
    if airflow_ui.version != "3.3.2":
        pytest.skip(f"Airflow {airflow_ui.version} may have the fix (apache/airflow#73298)")
    _connections(page, airflow_ui)
    request, response, shown = _press_test(page, CONN_ID)
    # The UI sends port 0 for a connection without a port; the API then takes it for another endpoint.
    assert request.post_data_json["port"] == 0
    assert response.status == 400
    assert "differs from the stored connection" in response.json()["detail"]
    assert "Bad Request" in shown
    page.screenshot(path=str(ARTIFACTS / "test-button-bad-request.png"))


def test_the_cli_test_is_the_workaround(airflow_ui, portal):
    proc = airflow_ui.cli("connections", "test", CONN_ID)
    assert "Connection success!" in proc.stdout
    assert portal.webhook_code not in proc.stdout + proc.stderr


def test_the_test_button_reports_the_hooks_answer_once_the_port_is_right(page, airflow_ui, portal):
    with _port_sent_as_null(page):
        _connections(page, airflow_ui)
        _, response, shown = _press_test(page, CONN_ID)
    assert response.status == 200, response.text()
    assert response.json()["status"] is True
    assert f"Connected to {portal.base_url} as user 1" in shown
    assert "scopes:" in shown
    assert portal.webhook_code not in shown
    page.screenshot(path=str(ARTIFACTS / "test-button-success.png"))


def test_the_reopened_connection_keeps_its_code_masked(page, airflow_ui, portal):
    dialog = _open_edit_form(page, airflow_ui, CONN_ID)
    password = dialog.get_by_label("Webhook code")
    assert password.get_attribute("type") == "password"
    assert password.input_value() != portal.webhook_code
    assert dialog.get_by_label("Portal or webhook URL").input_value() == portal.base_url
    assert dialog.get_by_label("Webhook user ID").input_value() == str(portal.webhook_user_id)
    assert portal.webhook_code not in page.content()
    page.screenshot(path=str(ARTIFACTS / "connection-reopened.png"), full_page=True)
    dialog.get_by_role("button", name="Close").click()
    page.get_by_role("dialog").wait_for(state="detached")


def test_a_rate_limit_object_stored_from_the_cli_opens_as_json_and_saves_as_typed(page, airflow_ui, portal):
    conn_id = "bitrix24_rate_object"
    airflow_ui.add_connection(
        conn_id,
        {
            "conn_type": "bitrix24",
            "host": portal.base_url,
            "login": str(portal.webhook_user_id),
            "password": portal.webhook_code,
            "extra": {"rate_limit": {"burst": 10, "per_second": 1}},
        },
    )
    dialog = _open_edit_form(page, airflow_ui, conn_id)
    _show_extra_fields(dialog)
    rate_limit = dialog.locator("#element_rate_limit")
    shown = rate_limit.input_value()
    assert shown != "[object Object]"
    assert json.loads(shown) == {"burst": 10, "per_second": 1}
    page.screenshot(path=str(ARTIFACTS / "rate-limit-object.png"), full_page=True)

    rate_limit.fill('{"burst": 20, "per_second": 4}')
    with page.expect_response(lambda r: f"/api/v2/connections/{conn_id}" in r.url) as saved:
        dialog.get_by_role("button", name="Save").click()
    assert saved.value.ok, saved.value.text()
    assert airflow_ui.hook_config(conn_id)["rate_limit"] == [20, 4.0]

    dialog = _open_edit_form(page, airflow_ui, conn_id)
    _show_extra_fields(dialog)
    dialog.locator("#element_rate_limit").fill("enterprise")
    with page.expect_response(lambda r: f"/api/v2/connections/{conn_id}" in r.url) as saved:
        dialog.get_by_role("button", name="Save").click()
    assert saved.value.ok, saved.value.text()
    assert airflow_ui.hook_config(conn_id)["rate_limit"] == [250, 5.0]


def test_testing_an_oauth_connection_in_the_ui_leaves_it_usable(page, airflow_ui, portal):
    conn_id = "bitrix24_ui_oauth"
    airflow_ui.add_connection(conn_id, oauth_connection(portal, portal.issue_oauth_tokens(expired=True)))

    with _port_sent_as_null(page):
        _connections(page, airflow_ui)
        _, response, shown = _press_test(page, conn_id)
    assert response.json()["status"] is True, shown
    assert portal.stats()["oauth_requests"] >= 1  # the expired access token was refreshed: the chain rotated

    # Real tasks afterwards, with the same stored connection: the example hook DAG checks it and reads a chat.
    state, output = airflow_ui.run_hook_dag(conn_id)
    assert "invalid_grant" not in output  # the refresh token in the stored connection was used up by the Test
    errors = [line for line in output.splitlines() if "Exception" in line or "[error" in line]
    assert state == "success", errors[-5:]
