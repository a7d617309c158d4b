"""A headless Chromium for page tests: Debian's ``chromium`` and ``chromium-driver`` via Selenium.

``make browser-setup`` installs the browser (``.ci/run`` calls it); Selenium comes with the
test extras. A missing piece fails the test with the command that installs it: a page test
that silently skips proves nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

BROWSERS = ("chromium", "/usr/bin/chromium")
DRIVERS = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
ARGS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def _found(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        path = shutil.which(name) or (name if Path(name).is_file() else None)
        if path:
            return path
    return None


@contextmanager
def chromium(*, width: int, height: int, profile: Path) -> Iterator[Any]:
    """A Selenium driver of a headless Chromium whose viewport is ``width`` x ``height``."""
    browser, driver_path = _found(BROWSERS), _found(DRIVERS)
    if browser is None or driver_path is None:
        pytest.fail(
            f"Chromium is not installed (browser: {browser}, driver: {driver_path}); the page "
            "tests need it: run `make browser-setup` (apt-get install chromium chromium-driver)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (*ARGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()


def full_page_png(driver: Any, path: Path) -> Path:
    """A screenshot of the whole page at the current width (the window grown to its height)."""
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height)
    driver.save_screenshot(str(path))
    return path
