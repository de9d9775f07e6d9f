"""The dashboard in a real browser: headless Chromium against a cluster run by ``ringmaster up``.

It uses the system's Chromium and chromedriver (Debian's ``chromium`` and
``chromium-driver``) by explicit path, so Selenium Manager never runs and nothing
downloads a browser. ``.ci/run`` installs both; the test is skipped only where they
are missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from shared.embedded import free_port
from shared.procutil import set_parent_death_signal
from shared.testing.bounds import COLD_START, timeout_for
from shared.testing.procs import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Generous bounds on a loaded 2-core machine: they catch a hang and time nothing.
LOST_BOUND = 60.0
STOP_BOUND = 90.0

# The page served, every service ALIVE, the victim LOST, its failure listed, the stop.
pytestmark = [
    pytest.mark.e2e,
    timeout_for(COLD_START, COLD_START, LOST_BOUND, LOST_BOUND, STOP_BOUND),
]

CLUSTER = """
[cluster]
prefix = '{prefix}'
beacon_interval = 0.5
data_dir = 'data'
nats_port = {nats_port}
http_port = {http_port}
[services.state_manager]
[services.job_manager]
[services.node_selector]
[services.status_metrics_collector]
[services.status_metrics_collector.config]
prometheus_port = 0
# The victim: never restarted, so killing it leaves it LOST.
[services.loop_manager]
restart = "temporary"
[services.node_agent]
[services.node_agent.config]
capabilities = ["cpu"]
slots = 1
min_free_disk_mb = 1
min_memory_mb = 1
"""
SERVICES = {
    "orchestrator",
    "state_manager",
    "job_manager",
    "node_selector",
    "status_metrics_collector",
    "loop_manager",
    "node_agent",
}

#: Every services row of the page as [service, instance, liveness].
ROWS_JS = (
    "return [...document.querySelectorAll('#services tr')]"
    ".map(r => [r.dataset.service, r.dataset.instance, r.dataset.liveness]);"
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.skip(f"no system Chromium for the browser test: {', '.join(missing)} missing")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # Chromium refuses to run as root (CI) with its sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--window-size=1400,1100",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "driver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def cluster(tmp_path: Path, prefix: str) -> Iterator[str]:
    """``ringmaster up`` on private ports; yields the dashboard URL."""
    http_port = free_port()
    path = tmp_path / "ringmaster.toml"
    path.write_text(CLUSTER.format(prefix=prefix, nats_port=free_port(), http_port=http_port))
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    with (tmp_path / "up.log").open("wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "up", "--cluster", str(path), "--no-live"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=set_parent_death_signal,  # the cluster dies with pytest
        )
        try:
            yield f"http://127.0.0.1:{http_port}/"
            up.send_signal(signal.SIGINT)
            assert up.wait(timeout=STOP_BOUND) == 0, (tmp_path / "up.log").read_text()[-3000:]
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()


def rows(driver: webdriver.Chrome) -> list[list[str]]:
    found: list[list[str]] = driver.execute_script(ROWS_JS)
    return found


def status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "status", timeout=5) as reply:
        found: dict[str, Any] = json.load(reply)
        return found


def wait_http(url: str, bound: float) -> None:
    """Until the orchestrator's HTTP server answers ``url`` (it starts after NATS)."""
    deadline = time.monotonic() + bound
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_the_page_shows_every_service_and_a_killed_one_lost(
    browser: webdriver.Chrome, cluster: str, tmp_path: Path
) -> None:
    wait_http(cluster, COLD_START)
    browser.get(cluster)

    def every_service_alive(driver: webdriver.Chrome) -> bool:
        alive = {service for service, _, liveness in rows(driver) if liveness == "ALIVE"}
        return alive >= SERVICES

    WebDriverWait(browser, COLD_START, poll_frequency=0.5).until(every_service_alive)
    assert browser.find_element("id", "link").text == "live"

    victim = next(v for v in status(cluster)["services"] if v["service"] == "loop_manager")
    os.kill(victim["pid"], signal.SIGKILL)

    def victim_lost(driver: webdriver.Chrome) -> bool:
        return [victim["service"], victim["instance"], "LOST"] in rows(driver)

    WebDriverWait(browser, LOST_BOUND, poll_frequency=0.5).until(victim_lost)
    row = browser.find_element("css selector", f"tr[data-instance='{victim['instance']}']")
    assert "LOST" in row.text
    # Only the victim is lost (a loaded machine may leave another SUSPECT for a moment),
    # and the page lists the loss among the failures.
    lost = {(service, instance) for service, instance, live in rows(browser) if live == "LOST"}
    assert lost == {(victim["service"], victim["instance"])}
    WebDriverWait(browser, LOST_BOUND, poll_frequency=0.5).until(
        lambda d: "SERVICE_LOST" in d.find_element("id", "failures").text
    )
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
