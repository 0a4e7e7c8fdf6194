"""What the results page's browser tests share (the `browser` fixture is in conftest.py)."""

import pathlib


def open_page(browser, path):
    """Open a page and wait until its script says it is ready; the console log starts empty."""
    browser.open(pathlib.Path(path).as_uri())
    browser.wait_for("return window.reportTimings && window.reportTimings.ready")
    browser.console()
