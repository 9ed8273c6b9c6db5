"""The console in a real browser against a real hub and real nodes (each its own process).

One fleet (an origin, a hub, three nodes in two zones) serves the module's tests, in
order: sign in and see every node; start a push job from the page and watch its bars
reach 100 % without a reload, with its chart, outcomes and bytes by source; cancel
another job from the page; drain a node and see the hub stop handing it out; restart
the hub and see the page reconnect by itself, the jobs still there. Every wait has a
deadline; every step leaves a screenshot (the folder is printed at the end of the run).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from smartget.demo import Fleet, local_fleet, make_file

from .conftest import needs_chromium

pytestmark = [pytest.mark.slow, needs_chromium]

FILE = "media/clip.bin"
SIZE = 24 * 1024 * 1024
BIG = "media/big.bin"  # the job that is cancelled
BIG_SIZE = 96 * 1024 * 1024
UPLOAD_LIMIT = 6 * 1024 * 1024  # bytes/s per node: the bars take a few seconds
UNITS = ["B", "KiB", "MiB", "GiB", "TiB"]
jobs: dict[str, str] = {}  # what the tests started: "pushed", "cancelled" -> job id


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("console-fleet")
    make_file(root / "origin" / FILE, SIZE)
    make_file(root / "origin" / BIG, BIG_SIZE)
    with local_fleet(root, nodes=3, ip_base=200, upload_limit=UPLOAD_LIMIT) as started:
        yield started


def wait(driver: Any, what: str, check: Callable[[Any], Any], seconds: float = 20) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.2).until(check)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {seconds:g} s") from None


def by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)  # type: ignore[no-any-return]


def text(driver: Any, selector: str) -> str:
    """The text of the first match, read in the page in one step (rows are redrawn live)."""
    found = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", selector
    )
    return str(found).strip()


def texts(driver: Any, selector: str) -> list[str]:
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText)",
        selector,
    )
    return [str(t).strip() for t in found]


def sign_in(driver: Any, fleet: Fleet) -> None:
    driver.get(f"{fleet.hub_url}/")
    if driver.current_url.endswith("/login"):
        token = by_css(driver, "input[name=token]")[0]
        token.clear()
        token.send_keys(fleet.token + "\n")
    wait(driver, "the live console", lambda d: text(d, "#conn") == "live")


def confirm(driver: Any) -> None:
    wait(driver, "the confirmation dialog", lambda d: by_css(d, "dialog#confirm[open]"))
    by_css(driver, "#confirm-ok")[0].click()


def result(driver: Any, contains: str) -> str:
    wait(driver, f"the result {contains!r}", lambda d: contains in text(d, "#result"))
    return text(driver, "#result")


def node_states(driver: Any) -> dict[str, str]:
    """Each node row's address -> its state badge."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#node-rows tr[data-node-id]'))"
        ".map(r => [r.querySelector('.addr').textContent, r.querySelector('.badge').textContent])"
    )
    return {addr.split(":")[0]: state for addr, state in rows}


def size(n: float) -> str:
    """The page's way of writing a byte count (console.js ``bytes``)."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.{1 if value < 10 and unit else 0}f} {UNITS[unit]}"


def bars(driver: Any, card: str) -> list[float]:
    values = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(p => p.value)",
        f"{card} progress",
    )
    return [float(v) for v in values]


def start_job(driver: Any, url: str, cap_mib: str) -> str:
    """Fill in and send the "start a push" form; the new job's id, from the result."""
    by_css(driver, "#push-box summary")[0].click()
    by_css(driver, "#push-urls")[0].send_keys(url)
    by_css(driver, "#push-cap")[0].send_keys(cap_mib)
    by_css(driver, "#push-form button[type=submit]")[0].click()
    wait(driver, "the question", lambda d: "Push " in text(d, "#confirm-text"))
    question = text(driver, "#confirm-text")
    assert "to every node in every zone, at most 6.0 MiB/s up per node" in question
    confirm(driver)
    found = re.search(r"job ([0-9a-f]{16}) queued \(1 file\)", result(driver, "queued"))
    assert found, text(driver, "#result")
    return found.group(1)


def hub_api(fleet: Fleet, method: str, path: str, **kwargs: Any) -> Any:
    auth = {"Authorization": f"Bearer {fleet.token}"}
    reply = httpx.request(method, f"{fleet.hub_url}{path}", headers=auth, timeout=10, **kwargs)
    reply.raise_for_status()
    return reply.json()


def test_sign_in_and_see_every_node(
    driver: Any, fleet: Fleet, shoot: Callable[[str], Path]
) -> None:
    driver.get(f"{fleet.hub_url}/")
    wait(driver, "the sign-in page", lambda d: d.current_url.endswith("/login"))
    shoot("01-sign-in")
    by_css(driver, "input[name=token]")[0].send_keys("not-the-token\n")
    wait(driver, "the refusal", lambda d: "not the hub" in text(d, ".error"))
    shoot("02-wrong-token")
    sign_in(driver, fleet)
    # Every node, in its zone, with its free capacity: as the hub's registry has them.
    wait(driver, "three nodes", lambda d: set(node_states(d)) == set(fleet.node_ips))
    assert set(node_states(driver).values()) == {"available"}
    heads = texts(driver, "#node-rows tr.zone-head")
    assert heads == ["zone-a · 2 nodes", "zone-b · 1 node"]
    assert text(driver, '#summary dd[data-stat="nodes"]') == "3"
    assert "up" in text(driver, "#hub-list")
    # HttpOnly: the session cookie is not the page's to read.
    assert "smartget_session" not in driver.execute_script("return document.cookie")
    # The filters work on what the stream delivers.
    by_css(driver, "#zone-filter option[value='zone-b']")[0].click()
    wait(driver, "zone-b only", lambda d: list(node_states(d)) == [fleet.node_ips[1]])
    shoot("03-fleet-filtered")
    by_css(driver, "#zone-filter option[value='']")[0].click()
    wait(driver, "every node again", lambda d: len(node_states(d)) == 3)
    shoot("04-console")
    # Nothing the CSP refused, no script errors.
    problems = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    problems = [p for p in problems if "/login" not in p]  # the wrong token's 401
    assert not problems, problems


def test_push_job_from_the_page_reaches_100_percent_live(
    driver: Any, fleet: Fleet, shoot: Callable[[str], Path]
) -> None:
    sign_in(driver, fleet)
    driver.execute_script("window.__noReload = 'still the same page'")
    shoot("05-push-form")
    job_id = start_job(driver, fleet.file_url(FILE), "6")
    jobs["pushed"] = job_id
    card = f"#job-list [data-job='{job_id}']"
    # Submitted through the jobs core: the hub's API knows the same job.
    assert hub_api(fleet, "GET", f"/api/jobs/{job_id}")["files"][0]["url"] == fleet.file_url(FILE)

    wait(driver, "three bars", lambda d: len(bars(d, card)) == 3, seconds=30)
    wait(driver, "a bar between 0 and 100", lambda d: any(0 < v < 100 for v in bars(d, card)), 30)
    assert text(driver, f"{card} .badge") == "running"
    # Mid-job: the torrent is made, so the chart draws the lower bound of the job's cap.
    wait(driver, "the lower bound", lambda d: by_css(d, f"{card} .job-chart polyline.bound"))
    assert "lower bound" in text(driver, f"{card} .job-chart-caption")
    caption = text(driver, f"{card} .job-chart-caption")
    assert "each node fetched its stripe from the origin and uploads at ≤ 6.0 MiB/s" in caption
    assert "downloading" in texts(driver, f"{card} td.outcome .what")
    shoot("06-job-running")  # 1280 px wide: docs/console.png is one of these

    wait(driver, "every bar at 100 %", lambda d: bars(d, card) == [100.0] * 3, seconds=60)
    wait(driver, "the job done", lambda d: text(d, f"{card} .badge") == "done", seconds=60)
    shoot("07-job-done")
    assert driver.execute_script("return window.__noReload") == "still the same page"
    assert texts(driver, f"{card} .pct") == ["100.0 %"] * 3
    assert texts(driver, f"{card} td.outcome .what") == ["done"] * 3
    roles = texts(driver, f"{card} tbody tr td:nth-child(2)")
    assert sorted(roles) == ["peer", "peer", "seed"]
    assert "3/3 nodes done" in text(driver, f"{card} .job-meta")
    assert not by_css(driver, f"{card} button[data-action=cancel-job]")[0].is_displayed()
    # The completion chart: three nodes done; bytes by source, as the hub's job has them.
    assert "Nodes with every file, 3 of 3" in text(driver, f"{card} .job-chart-caption")
    view = hub_api(fleet, "GET", f"/api/jobs/{job_id}")
    assert view["state"] == "done"
    total = {s: sum(n["bytes"][s] for n in view["nodes"]) for s in view["nodes"][0]["bytes"]}
    assert total["origin"] >= SIZE  # the stripes, each byte once, at least
    shown = text(driver, f"{card} .job-sources-text")
    assert f"origin {size(total['origin'])}" in shown
    assert f"peers, same zone {size(total['peer_same_zone'])}" in shown
    assert f"peers, other zones {size(total['peer_other_zone'])}" in shown
    # Striped: each node took its third from the origin and the rest from the others.
    for n in view["nodes"]:
        assert text(driver, f"{card} tr[data-nodeid='{n['nodeid']}'] td.from").endswith("% peers")
    # The hour's chart of origin against peer bytes has them (sampled every 5 s).
    peers = total["peer_same_zone"] + total["peer_other_zone"]
    wait(
        driver,
        "the hour's bytes by source",
        lambda d: (
            f"origin {size(total['origin'])}, peers {size(peers)}" in text(d, "#sources-note")
        ),
        seconds=15,
    )
    assert len(by_css(driver, "#chart-sources polyline")) == 3
    # The swarm: the tracker's true counts, three seeds once every node finished.
    wait(driver, "the swarm's seeds", lambda d: text(d, "#swarm-rows .seeds") == "3", 30)
    shoot("08-swarm")
    # The same page on a phone, and in the dark (it follows the system's setting).
    driver.set_window_size(390, 844)
    wait(driver, "one column", lambda d: d.execute_script("return window.innerWidth") <= 400)
    shoot("08b-phone")
    dark = [{"name": "prefers-color-scheme", "value": "dark"}]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": dark})
    driver.set_window_size(1280, 900)
    shoot("08c-dark")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_cancel_a_job_from_the_page(
    driver: Any, fleet: Fleet, shoot: Callable[[str], Path]
) -> None:
    sign_in(driver, fleet)
    job_id = start_job(driver, fleet.file_url(BIG), "6")
    jobs["cancelled"] = job_id
    card = f"#job-list [data-job='{job_id}']"
    wait(driver, "the job running", lambda d: any(0 < v < 100 for v in bars(d, card)), 60)
    # A little further, for a picture of a job under way (docs/console.png is this one).
    wait(driver, "a peer at 10 %", lambda d: any(10 <= v < 100 for v in bars(d, card)), 30)
    shoot("08d-second-job-running")  # 1280 px, with the first job's bytes in the charts
    cancel = f"{card} button[data-action=cancel-job]"
    by_css(driver, cancel)[0].click()
    wait(driver, "the question", lambda d: f"Cancel job {job_id}" in text(d, "#confirm-text"))
    assert "verified copies stay" in text(driver, "#confirm-text")
    shoot("08e-cancel-confirm")
    confirm(driver)
    said = result(driver, "cancelled")
    assert f"job {job_id} cancelled: what was not done is stopped" in said
    wait(driver, "the cancelled badge", lambda d: text(d, f"{card} .badge") == "cancelled")
    assert text(driver, f"{card} .job-reason") == "cancelled by an operator"
    outcomes = texts(driver, f"{card} td.outcome .what")
    assert "cancelled" in outcomes
    assert set(outcomes) <= {"cancelled", "done"}
    assert texts(driver, f"{card} tr[data-state='cancelled'] .why") == []  # said once
    assert not by_css(driver, cancel)[0].is_displayed()
    view = hub_api(fleet, "GET", f"/api/jobs/{job_id}")
    assert view["state"] == "cancelled"
    # The peers' downloads stopped: they leave the tracker's swarm (no leechers left).
    leechers = (
        "const r = Array.from(document.querySelectorAll('#swarm-rows tr'))"
        ".find(r => r.cells[0].textContent.startsWith('big.bin'));"
        "return r ? r.querySelector('.leechers').textContent : ''"
    )
    wait(driver, "no leechers of big.bin", lambda d: d.execute_script(leechers) == "0", 30)
    # The job that finished is untouched, and the running count went back to 0.
    assert text(driver, f"#job-list [data-job='{jobs['pushed']}'] .badge") == "done"
    wait(driver, "no job running", lambda d: text(d, '#summary dd[data-stat="jobs"]') == "0")
    shoot("08f-cancelled")


def test_drain_a_node_and_it_is_no_longer_handed_out(
    driver: Any, fleet: Fleet, shoot: Callable[[str], Path]
) -> None:
    sign_in(driver, fleet)
    victim = fleet.node_ips[2]
    node_id = next(n["id"] for n in hub_api(fleet, "GET", "/api/nodes") if n["ip"] == victim)
    row = f"#node-rows tr[data-node-id='{node_id}']"
    by_css(driver, f"{row} button[data-action=drain]")[0].click()
    wait(driver, "the question", lambda d: f"Drain node {node_id}" in text(d, "#confirm-text"))
    shoot("09-drain-confirm")
    confirm(driver)
    assert "no longer handed out" in result(driver, "drained")
    wait(driver, "the drained badge", lambda d: node_states(d)[victim] == "drained")
    assert text(driver, '#summary dd[data-stat="drained"]') == "1"
    shoot("10-drained")
    # The hub hands out every node but the drained one, heartbeats or not.
    handed = hub_api(fleet, "POST", "/api/nodes/request", json={"n": 50})["nodes"]
    assert handed
    assert victim not in {n["ip"] for n in handed}
    # Bring it back.
    by_css(driver, f"{row} button[data-action=undrain]")[0].click()
    confirm(driver)
    result(driver, "is back")
    wait(driver, "the node back", lambda d: node_states(d)[victim] != "drained")
    handed = hub_api(fleet, "POST", "/api/nodes/request", json={"n": 50})["nodes"]
    assert victim in {n["ip"] for n in handed}


def test_the_page_reconnects_after_a_hub_restart(
    driver: Any, fleet: Fleet, shoot: Callable[[str], Path]
) -> None:
    sign_in(driver, fleet)
    started = text(driver, "#hub-list .hub-started")
    driver.execute_script("window.__noReload = 'still the same page'")
    old = fleet.procs["hub"]
    old.send_signal(signal.SIGTERM)
    old.wait(timeout=20)
    wait(driver, "that the hub is away", lambda d: text(d, "#conn") != "live")
    shoot("11-hub-away")
    log = fleet.workdir / "logs" / "hub.log"
    with log.open("ab") as out:
        fleet.procs["hub"] = subprocess.Popen(
            old.args,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "SMARTGET_HUB_TOKEN": fleet.token},
        )
    wait(driver, "the console live again", lambda d: text(d, "#conn") == "live", seconds=45)
    wait(driver, "the new hub", lambda d: text(d, "#hub-list .hub-started") != started)
    assert "reconnected" in result(driver, "restarted")
    assert driver.execute_script("return window.__noReload") == "still the same page"
    wait(driver, "every node", lambda d: set(node_states(d)) == set(fleet.node_ips))
    # The jobs are the hub's, in its store: the restarted hub shows them as they ended.
    for job_id, state in ((jobs.get("pushed"), "done"), (jobs.get("cancelled"), "cancelled")):
        if job_id:
            badge = f"#job-list [data-job='{job_id}'] .badge"
            wait(driver, f"job {job_id} {state}", lambda d, b=badge, s=state: text(d, b) == s)
    shoot("12-reconnected")


def test_sign_out_and_the_demos_sign_in_link(
    driver: Any, fleet: Fleet, shoot: Callable[[str], Path]
) -> None:
    sign_in(driver, fleet)
    by_css(driver, "#signout")[0].click()
    wait(driver, "the sign-in page", lambda d: d.current_url.endswith("/login"))
    driver.get(f"{fleet.hub_url}/")  # the session is gone
    wait(driver, "the sign-in page again", lambda d: d.current_url.endswith("/login"))
    # What `smartget demo --keep` prints: the token in the fragment, never sent as such.
    driver.get(f"{fleet.hub_url}/login#token={fleet.token}")
    wait(driver, "the live console", lambda d: text(d, "#conn") == "live")
    assert fleet.token not in driver.current_url
    shoot("13-signed-in-by-link")
