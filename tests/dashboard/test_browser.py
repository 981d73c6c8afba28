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
    """A screenshot under the test's tmp_path, copied to $HEADLAB_SCREENSHOTS (default
    /tmp/headlab-shots) so a person can look at them after `make test`; never a blank page."""
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path))
    target = Path(os.environ.get("HEADLAB_SCREENSHOTS", "/tmp/headlab-shots"))
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target / path.name)
    with Image.open(path) as image:
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50  # not a blank page
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
    save_shot(browser, tmp_path, "head_page_L1H2")


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


# --- the token view: hover a token and the colours follow ------------------------------------

TOKEN_FRAME = "iframe[title='token-level attention view']"


def open_token_view(browser, url: str) -> None:
    """Load the page, scroll the token view into sight and switch into its frame."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.switch_to.default_content()
    browser.get(url)
    WebDriverWait(browser, STARTUP_S).until(lambda d: d.find_elements(By.CSS_SELECTOR, TOKEN_FRAME))
    frame = browser.find_element(By.CSS_SELECTOR, TOKEN_FRAME)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", frame)
    browser.switch_to.frame(frame)
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready")
    )


def alphas(browser, panel: int) -> list[float]:
    """The colour strength (alpha of the computed background) of every token of a panel."""
    colours = browser.execute_script(
        "return Array.from(document.querySelectorAll('.tv-panel')[arguments[0]]"
        ".querySelectorAll('.tv-tok')).map(s => getComputedStyle(s).backgroundColor)",
        panel,
    )

    def alpha(colour: str) -> float:
        parts = colour[colour.index("(") + 1 : -1].split(",")
        return float(parts[3]) if len(parts) == 4 else 1.0

    return [round(alpha(colour), 2) for colour in colours]


def hover(browser, panel: int, token: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    span = browser.execute_script(
        "return document.querySelectorAll('.tv-panel')[arguments[0]]"
        ".querySelectorAll('.tv-tok')[arguments[1]]",
        panel,
        token,
    )
    ActionChains(browser).move_to_element(span).perform()


def lit(values: list[float]) -> dict[int, float]:
    return {i: value for i, value in enumerate(values) if value > 0}


def test_hovering_a_token_colours_where_it_attends_in_a_real_browser(
    dashboard_url, browser, tmp_path
):
    """Fixture heads (tests/dashboard/fixture_runs.py, k = 2): L0H0 puts 0.75 on the previous
    token and 0.25 on itself; L2H3 0.8 on BOS and 0.2 on itself."""
    from selenium.webdriver.common.by import By

    from tests.dashboard.fixture_top_keys import HTML_TOKENS

    open_token_view(
        browser, f"{dashboard_url}/tokens?run=toy-a&layer=0&head=0&more=L2H3&prompt=html"
    )
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".tv-panel h3")]
    assert titles == ["L0H0", "L2H3"]
    # Token text that is markup shows as text: no element was made from it.
    assert browser.execute_script("return document.querySelectorAll('img, b').length") == 0
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('.tv-panel')[0]"
        ".querySelectorAll('.tv-tok')).map(s => s.textContent)"
    )
    assert shown[:6] == HTML_TOKENS[:6] and shown[6] == "↵"
    assert lit(alphas(browser, 0)) == {} == lit(alphas(browser, 1))  # nothing before a hover

    hover(browser, 0, 3)  # query 3
    assert lit(alphas(browser, 0)) == {2: 0.75, 3: 0.25}
    assert lit(alphas(browser, 1)) == {0: 0.8, 3: 0.2}  # the same query in the other head
    hover(browser, 1, 5)  # query 5, hovered in the other panel
    assert lit(alphas(browser, 0)) == {4: 0.75, 5: 0.25}
    assert lit(alphas(browser, 1)) == {0: 0.8, 5: 0.2}
    assert "query 5" in browser.find_elements(By.CSS_SELECTOR, ".tv-info")[0].text
    save_shot(browser, tmp_path, "token_view_query")

    browser.find_element(By.CSS_SELECTOR, "input[name=tv-mode][value=key]").click()
    hover(browser, 0, 2)  # key 2: which queries attend to it
    assert lit(alphas(browser, 0)) == {2: 0.25, 3: 0.75}
    assert lit(alphas(browser, 1)) == {2: 0.2}
    hover(browser, 1, 0)  # BOS: every query of the BOS head
    assert lit(alphas(browser, 1)) == {0: 1.0, **{q: 0.8 for q in range(1, len(HTML_TOKENS))}}
    save_shot(browser, tmp_path, "token_view_key")

    # A longer prompt, three heads side by side: the text wraps, the panels scroll together.
    open_token_view(
        browser, f"{dashboard_url}/tokens?run=toy-a&layer=1&head=1&more=L2H3,L0H2&prompt=prose"
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, ".tv-panel")) == 3
    hover(browser, 2, 40)
    assert lit(alphas(browser, 2)) == {39: 0.75, 40: 0.25}
    assert lit(alphas(browser, 1)) == {0: 0.8, 40: 0.2}
    # Far down the text BOS is out of sight: the rail beside the text still marks it, on top.
    browser.execute_script(
        "document.querySelectorAll('.tv-panel')[1].querySelectorAll('.tv-tok')[300]"
        ".scrollIntoView({block: 'center'})"
    )
    hover(browser, 1, 300)
    assert lit(alphas(browser, 1)) == {0: 0.8, 300: 0.2}
    scrolled = browser.execute_script(
        "return Array.from(document.querySelectorAll('.tv-text')).map(t => t.scrollTop)"
    )
    assert min(scrolled) > 100 and max(scrolled) - min(scrolled) <= 2  # scrolled together
    rail = browser.execute_script(  # RGBA of the rail's top 16 pixels, top to bottom
        "return Array.from(document.querySelectorAll('.tv-rail')[1].getContext('2d')"
        ".getImageData(5, 0, 1, 16).data)"
    )
    top = [rail[i : i + 4] for i in range(0, len(rail), 4)]
    assert [217, 72, 1, 204] in top  # BOS's mark (weight 0.8), in the key colour
    browser.switch_to.default_content()
    save_shot(browser, tmp_path, "token_view_prose")
