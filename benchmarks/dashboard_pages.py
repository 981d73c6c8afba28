"""How long each dashboard page takes to render in a real browser, on a stored run.

    python -m benchmarks.dashboard_pages [--data data] [--run RUN] [--repeats 2]

Serves `headlab dashboard --data DIR` on a free port and opens every page in headless Chromium
(Debian's chromium and chromium-driver, as `make browser` installs them). A page's time runs
from the request until Streamlit's script has finished and every plotly chart on the page has
drawn. The first visit of a page reads the run from disk (cold cache); later visits reuse the
cache, as a user moving between pages does. Prints one row per page.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PAGES = ["", "head_map", "head", "sinks", "retrieval", "future_attention", "sweeps", "compare"]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DRAWN = """
const app = document.querySelector('[data-testid=stApp]');
if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
const charts = document.querySelectorAll('[data-testid=stPlotlyChart]');
return Array.from(charts).every(c => c.querySelector('.js-plotly-plot .main-svg'));
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(data: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "analyses.cli", "dashboard", "--data", str(data),
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.3)
    os.killpg(server.pid, signal.SIGTERM)
    raise SystemExit("the dashboard did not start within 90 s")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1400"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def render_time(driver, url: str, timeout: float = 120) -> float:
    started = time.perf_counter()
    driver.get(url)
    time.sleep(0.2)  # let the new page's script start before asking whether it finished
    while time.perf_counter() - started < timeout:
        if driver.execute_script(DRAWN):
            return time.perf_counter() - started
        time.sleep(0.05)
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--run", help="run to show (default: the dashboard's default run)")
    parser.add_argument("--repeats", type=int, default=2, help="visits per page (first is cold)")
    args = parser.parse_args(argv)
    port = free_port()
    server = serve(args.data, port)
    driver = browser()
    query = f"?run={args.run}" if args.run else ""
    try:
        print(
            f"{'page':<18} " + " ".join(f"{f'visit {i + 1} (s)':>12}" for i in range(args.repeats))
        )
        for page in PAGES:
            times = [render_time(driver, f"http://127.0.0.1:{port}/{page}{query}")
                     for _ in range(args.repeats)]  # fmt: skip
            print(f"{page or 'overview':<18} " + " ".join(f"{t:>12.2f}" for t in times))
    finally:
        driver.quit()
        os.killpg(server.pid, signal.SIGTERM)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
