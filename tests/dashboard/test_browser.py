"""One real browser: `headlab dashboard` serves the app on 127.0.0.1 and headless Chromium
renders the head map's plotly heatmap.

Needs the Debian packages `chromium` and `chromium-driver` and the `selenium` package.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1400,1400")  # fmt: skip
STARTUP_S = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the dashboard exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the dashboard did not answer at {url} within {timeout} s")


@pytest.fixture
def dashboard_url(fixture_data: Path, tmp_path: Path) -> Iterator[str]:
    """`headlab dashboard` on a free port, stopped (its whole process group) afterwards."""
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "analyses.cli", "dashboard", "--data", str(fixture_data),
         "--port", str(port)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, STARTUP_S)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture
def browser(tmp_path: Path):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(f"{missing} not found: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_head_map_renders_in_a_real_browser(dashboard_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert dashboard_url.startswith("http://127.0.0.1:")
    browser.get(f"{dashboard_url}/head_map?run=toy-a")
    heatmap = ".js-plotly-plot .heatmaplayer image"  # plotly paints a heatmap as one image
    WebDriverWait(browser, STARTUP_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, heatmap))
    traces = browser.execute_script(
        "return Array.from(document.querySelectorAll('.js-plotly-plot'))"
        ".map(plot => (plot.data || []).map(trace => trace.type))"
    )
    assert traces == [["heatmap", "scatter"]]  # the map and its click targets

    def ticks(axis: str) -> list[str]:
        """Tick labels of an axis, in screen order (left to right, top to bottom)."""
        return browser.execute_script(
            f"return Array.from(document.querySelectorAll('.js-plotly-plot .{axis}tick text'))"
            ".map(t => [t.getBoundingClientRect().left + t.getBoundingClientRect().top,"
            " t.textContent]).sort((a, b) => a[0] - b[0]).map(pair => pair[1])"
        )

    assert ticks("x") == ["0", "1", "2", "3"]  # the toy model's 4 heads
    assert ticks("y") == ["0", "1", "2"]  # and 3 layers, layer 0 on top
    assert browser.find_elements(By.XPATH, "//*[contains(text(), 'Top 10 heads')]")
    assert not browser.find_elements(By.XPATH, "//*[contains(text(), 'Serving on')]")

    screenshot = tmp_path / "head_map.png"
    assert browser.save_screenshot(str(screenshot))
    with Image.open(screenshot) as image:
        assert image.size[0] >= 1000
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50  # not a blank page


def save_shot(browser, tmp_path: Path, name: str) -> Path:
    """A screenshot under the test's tmp_path, copied to $HEADLAB_SCREENSHOTS when set (so a
    person can look at them after `make test`)."""
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path))
    if os.environ.get("HEADLAB_SCREENSHOTS"):
        target = Path(os.environ["HEADLAB_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return path


def click_cell(browser, layer: int, head: int) -> None:
    """Click the centre of a heatmap cell, located through plotly's own axes."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    plot = browser.find_element(By.CSS_SELECTOR, ".js-plotly-plot .nsewdrag")
    x, y, width, height = browser.execute_script(
        "const gd = document.querySelector('.js-plotly-plot'), l = gd._fullLayout;"
        "const r = arguments[0].getBoundingClientRect();"
        f"return [l.xaxis.l2p({head}), l.yaxis.l2p({layer}), r.width, r.height];",
        plot,
    )
    ActionChains(browser).move_to_element_with_offset(
        plot, int(x - width / 2), int(y - height / 2)
    ).click().perform()


def test_clicking_a_head_map_cell_opens_that_head_in_the_same_run(dashboard_url, browser, tmp_path):
    from urllib.parse import parse_qs, urlparse

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{dashboard_url}/head_map?run=toy-b")  # not the default run (toy-a)
    heatmap = ".js-plotly-plot .heatmaplayer image"
    WebDriverWait(browser, STARTUP_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, heatmap))
    save_shot(browser, tmp_path, "head_map_toy_b")
    click_cell(browser, layer=1, head=2)
    WebDriverWait(browser, 60).until(lambda d: urlparse(d.current_url).path == "/head")
    title = WebDriverWait(browser, 60).until(
        lambda d: [h.text for h in d.find_elements(By.TAG_NAME, "h1") if h.text.startswith("L")]
    )
    assert title == ["L1H2 of toy"]
    query = parse_qs(urlparse(browser.current_url).query)
    assert (query["run"], query["layer"], query["head"]) == (["toy-b"], ["1"], ["2"])
    WebDriverWait(browser, 60).until(
        lambda d: d.find_elements(By.XPATH, "//*[contains(text(), 'Heads most like it')]")
    )
    shot = save_shot(browser, tmp_path, "head_page_L1H2")
    with Image.open(shot) as image:
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_selecting_a_top_k_row_opens_that_head_in_the_same_run(dashboard_url, browser, tmp_path):
    from urllib.parse import parse_qs, urlparse

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{dashboard_url}/head_map?run=toy-b")
    tables = '[data-testid="stDataFrame"]'
    (grid,) = WebDriverWait(browser, STARTUP_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, tables)
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", grid)
    time.sleep(1)
    box = grid.rect
    # the first data row's selection box: the row-marker column, below the 35 px header row
    ActionChains(browser).move_to_element_with_offset(
        grid, int(18 - box["width"] / 2), int(35 + 17 - box["height"] / 2)
    ).click().perform()
    WebDriverWait(browser, 60).until(lambda d: urlparse(d.current_url).path == "/head")
    query = parse_qs(urlparse(browser.current_url).query)
    # toy-b reverses α: L0H0 is its top head at k = 0
    assert (query["run"], query["layer"], query["head"]) == (["toy-b"], ["0"], ["0"])
    WebDriverWait(browser, 60).until(
        lambda d: [h for h in d.find_elements(By.TAG_NAME, "h1") if h.text == "L0H0 of toy"]
    )
    save_shot(browser, tmp_path, "head_page_from_top_k")
