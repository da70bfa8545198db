"""Headless Chromium for the console tests and benchmark (Debian's chromium and
chromium-driver, driven by Selenium; nothing is downloaded).

``chrome()`` returns a driver or raises :class:`NoBrowser` saying what is missing, so a test
can skip with that reason where no Chromium can be installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
# Without the background-networking flags Chromium tries to reach Google's services at start,
# which a closed network refuses slowly; a fresh profile keeps runs independent.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,900", "--enable-precise-memory-info")


class NoBrowser(RuntimeError):
    """No Chromium, chromedriver or Selenium here; ``str()`` says which."""


def _first(paths: tuple[str, ...], what: str, package: str) -> str:
    for p in paths:
        if os.access(p, os.X_OK):
            return p
    found = shutil.which(os.path.basename(paths[0]))
    if found:
        return found
    raise NoBrowser(f"no {what} (Debian package {package}; `make setup` installs it)")


@contextmanager
def chrome(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """A headless Chromium driven by Selenium, its profile in a new temporary directory."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise NoBrowser("selenium is not installed (the 'test' extra)") from None
    binary = _first(CHROMIUM, "chromium", "chromium")
    driver_path = _first(DRIVER, "chromedriver", "chromium-driver")
    profile = tempfile.mkdtemp(prefix="ts-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
