"""A real browser for the console's tests: Debian's chromium through chromium-driver.

Selenium is pointed at /usr/bin/chromedriver and /usr/bin/chromium, and told to stay
offline (SE_OFFLINE): Selenium Manager never downloads a browser or a driver. Chromium
runs headless with a fresh profile and without any of its own network traffic.

Screenshots of every step go to ``$SMARTGET_ARTIFACTS/console`` if that is set, else to
a folder under pytest's temporary directory; the folder is printed at the end of the
run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WIDTH, HEIGHT = 1280, 900

_shown: list[Path] = []

needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (scripts/bootstrap --test installs them)",
)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    os.environ["SE_OFFLINE"] = "1"  # Selenium Manager: no downloads, ever
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="smartget-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    browser.set_page_load_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("SMARTGET_ARTIFACTS")
    folder = Path(given) / "console" if given else tmp_path_factory.mktemp("console-shots")
    folder.mkdir(parents=True, exist_ok=True)
    if folder not in _shown:
        _shown.append(folder)
    return folder


@pytest.fixture
def shoot(driver: Any, shots: Path) -> Callable[[str], Path]:
    """Save a screenshot of the whole page as NAME.png."""

    def save(name: str) -> Path:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        width = driver.execute_script("return window.innerWidth")
        driver.set_window_size(max(width, 360), max(HEIGHT, min(int(height) + 140, 4000)))
        path = shots / f"{name}.png"
        driver.save_screenshot(str(path))
        return path

    return save


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for folder in _shown:
        terminalreporter.write_line(f"console screenshots: {folder}")
