"""The console in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven
by selenium) on the pages `filecast console` serves against Azurite after real runs. Screenshots
go to tests/artifacts/console/ (kept by CI); axe-core checks each page for WCAG 2 A/AA problems."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

import core.control.service
from core.settings import Settings
from devtools.services import REPO
from tests.helpers import http, messages, unavailable

SHOTS = REPO / "tests" / "artifacts" / "console"
T0 = datetime(2025, 4, 14, 6, 0, tzinfo=UTC)
EVIL = "<script>document.title='pwned'</script>"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in FLAGS:
            options.add_argument(flag)
        profile = tempfile.mkdtemp(prefix="filecast-chromium-")
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    except Exception as exc:
        unavailable("headless Chromium (Debian chromium + chromium-driver)", exc)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def console(env: dict[str, Any], demo_db: Path, tmp_path: Path) -> Iterator[str]:
    """Real runs recorded in Azurite, then `python -m core console` serving them on a free port."""
    doc = {
        "sources": {"warehouse": {"type": "duckdb", "database": str(demo_db)}},
        "models": {
            "customers": {
                "source": "warehouse",
                "sql": "select * from customers where customer_id <= 500",
                "primary_key": ["customer_id"],
            }
        },
        "destinations": {
            "lake": {
                "type": "azure_blob",
                "container": env["container"],
                "connection_setting": "OUT_STORAGE",
                "create_container": True,
            }
        },
        "activations": {
            "customers_daily": {
                "model": "customers",
                "destination": "lake",
                "format": "csv",
                "file_name": "daily_{YYYY}{MM}{DD}",
                "schedule": "0 6 * * *",
            },
            "broken": {
                "model": "customers",
                "destination": "lake",
                "format": "csv",
                "file_name": "b",
                "mapping": [{"from": EVIL, "to": "x"}],
            },
        },
    }
    status, body = http("put_catalog", "PUT", "/api/catalog", body=yaml.safe_dump(doc).encode())
    assert status == 200, body
    services = core.control.service.Services(Settings.load())
    catalog = services.catalog()
    env["runs"] = [
        asyncio.run(
            core.control.service.run_activation(
                services.settings, catalog, activation, logical_time=T0 + timedelta(days=day), services=services
            )
        ).record
        for activation, day in (("customers_daily", 0), ("customers_daily", 1), ("customers_daily", 2), ("broken", 0))
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "core", "console", "--port", "0"],
        cwd=REPO,
        env={**os.environ},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("console: http://127.0.0.1:"), line
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(timeout=10)


def shot(driver: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / name))


def accessibility(driver: Any) -> list[str]:
    """axe-core's WCAG 2 A/AA violations on the current page (the script comes from a local package)."""
    import axe_selenium_python

    script = Path(axe_selenium_python.__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
    driver.execute_script(script.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}}).then(done, "
        "function(e){ done({error: String(e)}); });"
    )
    assert "error" not in result, result
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes)" for v in result["violations"]]


def cells(driver: Any, row_text: str) -> list[str]:
    from selenium.webdriver.common.by import By

    for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr"):
        if row_text in row.text:
            return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    raise AssertionError(f"no row with {row_text!r}")


def test_console_shows_runs_runs_now_and_escapes(env: dict[str, Any], console: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    daily = [r for r in env["runs"] if r.activation == "customers_daily"]
    broken = next(r for r in env["runs"] if r.activation == "broken")
    browser.get(console + "?code=k3y")
    assert browser.title == "Activations · Filecast"
    now = datetime.now(UTC)
    due = now.replace(hour=6, minute=0, second=0, microsecond=0)
    due = due if due > now else due + timedelta(days=1)
    row = cells(browser, "customers_daily")
    assert row[0] == "customers_daily" and row[1] == "model customers" and row[4] == "0 6 * * *"
    assert row[5] == due.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert row[6].startswith(daily[-1].run_id) and row[7:] == ["succeeded", "500", "1"]
    assert cells(browser, "broken")[7] == "failed"
    shot(browser, "activations.png")
    assert accessibility(browser) == []

    browser.find_element(By.LINK_TEXT, "customers_daily").click()
    assert browser.current_url.endswith("/api/console/activations/customers_daily?code=k3y")  # the key carried
    listed = [row.find_element(By.TAG_NAME, "a").text for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert listed == [r.run_id for r in reversed(daily)]  # newest first
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure svg rect")) == 6  # rows and duration per run
    shot(browser, "activation.png")
    assert accessibility(browser) == []

    browser.find_element(By.XPATH, "//button[text()='Preview']").click()
    output = browser.find_element(By.ID, "result")
    WebDriverWait(browser, 60).until(lambda d: output.text.startswith("Preview:"))
    preview = output.text.split("\n")
    assert (
        preview[0] == "Preview: 500 rows would be exported (0 added, 0 updated, 0 removed), a full run, nothing "
        "uploaded:"
    )
    assert preview[1].startswith(f"  daily_{datetime.now(UTC):%Y%m%d}.csv: 500 rows, ")
    assert len(list(env["blobs"].list_blobs())) == 3  # the preview uploaded nothing
    browser.find_element(By.XPATH, "//button[text()='Run now']").click()
    WebDriverWait(browser, 30).until(lambda d: output.text.startswith("Queued run "))
    queued = output.text.split()[2].rstrip(".")
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(u.endswith("/api/activations/customers_daily/run?code=k3y") for u in fetched), fetched
    assert [m["run_id"] for m in messages(env)] == [queued]
    shot(browser, "activation-run-now.png")
    browser.refresh()
    assert cells(browser, queued)[1] == "queued"

    browser.find_element(By.LINK_TEXT, daily[0].run_id).click()
    WebDriverWait(browser, 30).until(ready.title_contains(daily[0].run_id))
    path, rows, size, md5 = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "table tbody tr td")][:4]
    blob = env["blobs"].get_blob_client(path).download_blob().readall()
    assert (path, rows, size, md5) == ("daily_20250414.csv", "500", f"{len(blob):,}", hashlib.md5(blob).hexdigest())
    shot(browser, "run.png")
    assert accessibility(browser) == []

    browser.get(f"{console}/runs/{broken.run_id}")
    error = browser.find_element(By.CSS_SELECTOR, "p.error").text
    assert error.startswith(f'invalid_catalog activations.broken.mapping[0].from: unknown column "{EVIL}"')
    assert browser.title == f"Run {broken.run_id} · Filecast"  # the injected script never ran
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # only the console's own
    shot(browser, "run-error.png")
    assert accessibility(browser) == []
    browser.execute_script("document.querySelector('main').appendChild(document.createElement('img'))")
    assert [v.split(":")[0] for v in accessibility(browser)] == ["image-alt"]  # the checker does see problems
