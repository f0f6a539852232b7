"""Several browser sessions on one dashboard served beyond localhost: each shows the token once, then clicks
"Start training" and switches page right after the click (the race that lost 4 of 44 clicks), over and over.

Counts clicks, jobs that saved a run, page switches, exception boxes and server tracebacks, and the time each page
took to show its title. Loopback only (the server binds every interface; the browsers connect to 127.0.0.1).

    python benchmarks/bench_sessions.py --sessions 5 --minutes 8

`drive_sessions` is also what tests/test_e2e_safety.py runs, bounded to 3 sessions for 2 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TINY = {"architecture": "clipsvd-tiny", "weights": "random", "seed": 0, "activation": "auto"}
OTHER_PAGES = {"Runs": "Runs", "Compare": "Compare", "Model and data": "Model & data", "Singular values":
               "Singular values"}
WAIT_MS = 180_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(runs_root: Path, token: str, log_path: Path, port: int | None = None
                    ) -> tuple[subprocess.Popen, str]:
    """`clipsvd dashboard --address 0.0.0.0` with the token in the environment; returns the process and the
    loopback URL, once healthy."""
    port = port or free_port()
    env = dict(os.environ, CLIPSVD_RUNS=str(runs_root), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT),
               CLIPSVD_DASHBOARD_TOKEN=token)
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "-m", "clipsvd", "dashboard", "--address", "0.0.0.0",
                                "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"clipsvd dashboard exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"the dashboard did not become healthy at {url}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Tally:
    sessions: int = 0
    seconds: float = 0.0
    clicks: int = 0
    page_switches: int = 0
    exceptions: list[str] = field(default_factory=list)
    page_ready_s: list[float] = field(default_factory=list)
    runs_saved: int = 0
    runs_by_status: dict[str, int] = field(default_factory=dict)
    drain_s: float = 0.0
    server_tracebacks: int = 0

    @property
    def lost_jobs(self) -> int:
        return self.clicks - self.runs_saved

    def table(self) -> str:
        ready = sorted(self.page_ready_s) or [float("nan")]
        rows = [("sessions", self.sessions), ("seconds driven", f"{self.seconds:.0f}"),
                ("Start clicks (each followed at once by a page switch)", self.clicks),
                ("runs saved", f"{self.runs_saved} {json.dumps(self.runs_by_status)}"),
                ("lost or dropped jobs", self.lost_jobs), ("page switches", self.page_switches),
                ("exception boxes", len(self.exceptions)), ("server tracebacks", self.server_tracebacks),
                ("page ready, median / p90 / max (s)",
                 f"{statistics.median(ready):.1f} / {ready[int(0.9 * (len(ready) - 1))]:.1f} / {ready[-1]:.1f}"),
                ("queue drained after (s)", f"{self.drain_s:.0f}")]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _nav(tab, label: str) -> None:
    tab.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first.click()


def _wait_title(tab, title: str, tally: Tally, started: float) -> None:
    from playwright.sync_api import expect

    expect(tab.get_by_role("heading", name=title, exact=True).first).to_be_visible(timeout=WAIT_MS)
    tally.page_ready_s.append(time.time() - started)
    tally.page_switches += 1
    boxes = tab.locator('[data-testid="stException"]')
    if boxes.count():
        tally.exceptions.append(boxes.first.inner_text()[:500])


def _idle(tab) -> None:
    from playwright.sync_api import expect

    tab.wait_for_timeout(500)
    expect(tab.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=WAIT_MS)


def _prepare_train_form(tab) -> None:
    """1 epoch, 2 test images per class: a run of the tiny model takes seconds."""
    from playwright.sync_api import expect

    _idle(tab)
    cap = tab.get_by_label("Max test images per class (0: all)", exact=True)
    cap.fill("2")
    cap.press("Enter")
    _idle(tab)
    tab.get_by_text("Hyperparameters:").first.click()
    epochs = tab.get_by_label("epochs", exact=True).first
    expect(epochs).to_be_visible(timeout=WAIT_MS)
    epochs.fill("1")
    epochs.press("Enter")
    _idle(tab)


def drive_sessions(url: str, token: str, runs_root: Path, sessions: int = 3, seconds: float = 120,
                   drain_timeout_s: float = 300, seed: int = 0) -> Tally:
    """Round-robin over `sessions` browser contexts (separate cookies: separate users): on Train, click Start and
    switch to another page at once; elsewhere, wait for the title, then go back to Train. Afterwards waits for
    the server's queue to drain and counts the runs saved against the clicks."""
    from playwright.sync_api import expect, sync_playwright

    from clipsvd.runs import RunStore

    rng = random.Random(seed)
    tally = Tally(sessions=sessions)
    query = urllib.parse.urlencode({"token": token, "model": json.dumps(TINY, separators=(",", ":")), "shots": "1"})
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tabs = []
            for _ in range(sessions):
                context = browser.new_context(viewport={"width": 1300, "height": 1400})
                tab = context.new_page()
                tab.set_default_timeout(WAIT_MS)
                tab.goto(f"{url}/Train?{query}")
                expect(tab.get_by_role("heading", name="Train", exact=True)).to_be_visible(timeout=WAIT_MS)
                _prepare_train_form(tab)
                tabs.append([tab, "Train", time.time()])
            begin = time.time()
            while time.time() - begin < seconds:
                for entry in tabs:
                    tab, where, since = entry
                    if where == "Train":
                        _wait_title(tab, "Train", tally, since)
                        button = tab.get_by_role("button", name="Start training")
                        expect(button).to_be_enabled(timeout=WAIT_MS)
                        button.click()
                        tally.clicks += 1
                        label = rng.choice(list(OTHER_PAGES))
                        _nav(tab, label)  # at once: the click's rerun is still running or queued
                        entry[1:] = [OTHER_PAGES[label], time.time()]
                    else:
                        _wait_title(tab, where, tally, since)
                        _nav(tab, "Train")
                        entry[1:] = ["Train", time.time()]
            tally.seconds = time.time() - begin
            for tab, where, since in tabs:
                _wait_title(tab, where, tally, since)
        finally:
            browser.close()
    drain_start = time.time()
    store = RunStore(runs_root)
    while time.time() - drain_start < drain_timeout_s:
        if len(store.list()) >= tally.clicks:
            break
        time.sleep(2)
    tally.drain_s = time.time() - drain_start
    runs = store.list()
    tally.runs_saved = len(runs)
    for run in runs:
        tally.runs_by_status[str(run.status)] = tally.runs_by_status.get(str(run.status), 0) + 1
    return tally


def count_tracebacks(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count("Traceback (most recent call last)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=8)
    args = parser.parse_args()
    print(run_benchmark(args.sessions, args.minutes * 60).table())


def run_benchmark(sessions: int = 5, seconds: float = 480) -> Tally:
    """The whole measurement in a fresh run store and server; callable from bench_faults.py."""
    import secrets

    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as folder:
        runs_root, log_path = Path(folder) / "runs", Path(folder) / "dashboard.log"
        token = secrets.token_urlsafe(16)
        process, url = start_dashboard(runs_root, token, log_path)
        try:
            tally = drive_sessions(url, token, runs_root, sessions, seconds, drain_timeout_s=max(300, seconds))
        finally:
            stop(process)
        tally.server_tracebacks = count_tracebacks(log_path)
    return tally


if __name__ == "__main__":
    main()
