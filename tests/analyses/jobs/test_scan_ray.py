"""Sharded scans on the Ray executor: the local unsharded scan's rows bit for bit, and a second
node (a second raylet on this machine) stopped mid-run loses and doubles nothing.

Marked `ray`: the first starts a local cluster with 2 CPUs as the sweep's Ray tests do; the
second starts a two-node cluster of its own (`ray start --head` and `ray start --address`, one
CPU each, on free ports, in its own temporary directory) and stops it again; about 90 s on a
loaded 2-core machine, most of it the two nodes starting."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from analyses.jobs import scan, scan_parts, scan_runs
from analyses.results import store
from tests.analyses.jobs.test_scan_runs import config, stored, write_prompts

REPO = Path(__file__).resolve().parents[3]
RAY = Path(sys.executable).parent / "ray"


@pytest.mark.ray
def test_a_sharded_scan_on_ray_equals_the_local_unsharded_scan(tmp_path):
    # One torch thread here, as in each actor (--cpus-per-worker 1): float sums depend on it.
    whole = scan_runs.run_one(config(tmp_path, "local", threads=1))
    ray_config = config(tmp_path, "ray", shards=3, executor="ray", workers=2)
    (directory,) = scan_runs.run([ray_config])
    pd.testing.assert_frame_equal(stored(directory), stored(whole), check_exact=True)
    manifest = store.read_manifest(tmp_path / "ray", directory.name)
    assert manifest["shards"]["executor"] == "ray" and manifest["shards"]["workers"] == 2
    assert manifest["shards"]["torch_threads"] == [1]
    assert scan.ScanConfig.from_manifest(manifest) == ray_config


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def node_ports(ports: list[int]) -> list[str]:
    """Every port a node listens on, given (another session's cluster may hold the defaults)."""
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port",
             "metrics-export-port")  # fmt: skip
    return [f"--{name}={port}" for name, port in zip(names, ports, strict=True)]


def wait_until(condition, seconds: float, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        if found := condition():
            return found
        time.sleep(0.01)
    return None


def start_node(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """`ray start --block ...`, again if it fails: Ray's Python side gives a node 30 s to
    register, which a loaded machine's agents can miss. Returns once the node is up."""
    for attempt in range(3):
        with log.open("a") as out:
            node = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
        if wait_until(lambda: "block forever" in log.read_text(), 180, node):
            return node
        stop(node)
        log.write_text(log.read_text() + f"\n--- attempt {attempt + 1} failed ---\n")
    raise AssertionError(log.read_text()[-3000:])


def stop(node: subprocess.Popen | None) -> None:
    """SIGTERM to the node's command, which stops its processes (as `ray stop` would there)."""
    if node is None or node.poll() is not None:
        return
    os.killpg(node.pid, signal.SIGTERM)
    try:
        node.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()


@contextlib.contextmanager
def two_nodes(tmp_path: Path):
    """A head node and a second node, one CPU each: (GCS port, the second node's process, env).
    `ray start --block` keeps each node's processes under one command."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "PYTHONPATH": str(REPO),
           # a loaded machine starts a node's agents slowly; the raylet waits for them
           "RAY_agent_register_timeout_ms": "120000"}  # fmt: skip
    gcs, dashboard, *ports = free_ports(14)
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    # Ray's sockets live under the temporary directory: a short path (AF_UNIX allows ~100 bytes)
    sessions = Path(tempfile.mkdtemp(prefix="hl-ray-"))
    head = second = None
    try:
        head = start_node(
            [str(RAY), "start", "--head", f"--port={gcs}", "--include-dashboard=false",
             f"--dashboard-port={dashboard}", f"--temp-dir={sessions}", *common,
             *node_ports(ports[:6])], tmp_path / "head.log", env,
        )  # fmt: skip
        second = start_node(
            [str(RAY), "start", f"--address=127.0.0.1:{gcs}", *common, *node_ports(ports[6:])],
            tmp_path / "second.log", env,
        )  # fmt: skip
        yield gcs, second, env
    finally:
        stop(second)
        stop(head)
        shutil.rmtree(sessions, ignore_errors=True)


def computing_on(node: subprocess.Popen) -> list[psutil.Process]:
    """The Ray actors of `node` that are computing an item now (Ray titles them so)."""
    found = []
    for child in psutil.Process(node.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.cmdline()[:1] == ["ray::RayWorker.compute"]:
                found.append(child)
    return found


@pytest.mark.ray
def test_a_second_node_stopped_mid_run_has_its_items_redone(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=40, words=10)
    flags = ["--model", "tiny-random", "--prompts", str(prompts), "--max-tokens", "128",
             "--batch-size", "2", "--probes", "sink,attention_stats", "--run-id", "nodes",
             "--quiet"]  # fmt: skip
    from analyses.cli.main import main

    assert main(["scan", *flags, "--data", str(tmp_path / "whole"), "--threads", "1"]) == 0
    data = tmp_path / "data"
    with two_nodes(tmp_path) as (gcs, second, env):
        command = [sys.executable, "-m", "analyses.cli", "scan", *flags, "--data", str(data),
                   "--shards", "20", "--executor", "ray", "--address", f"127.0.0.1:{gcs}",
                   "--workers", "2"]  # fmt: skip
        driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        parts = data / "runs" / scan_parts.PARTS_ROOT / "nodes"
        busy = wait_until(lambda: len(list(parts.glob("part-*.pt"))) >= 2
                          and computing_on(second), 240, driver)  # fmt: skip
        assert busy, "the scan finished (or failed) before the second node could be stopped"
        n_before = len(list(parts.glob("part-*.pt")))
        os.killpg(second.pid, signal.SIGTERM)  # stop the second node, mid-item
        _, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
    assert n_before < 20
    whole = stored(store.run_dir(tmp_path / "whole", "nodes"))
    pd.testing.assert_frame_equal(stored(store.run_dir(data, "nodes")), whole, check_exact=True)
    assert store.read_manifest(data, "nodes")["shards"]["parts_this_session"] == 20
