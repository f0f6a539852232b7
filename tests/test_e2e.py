"""End to end: a real Streamlit server driven by Debian's Chromium through Playwright.

Starts on the defaults (the world CLIP, the world's microscopy-like shapes), trains a run of it to
completion, cancels a second one, opens every page, downloads a PNG figure and switches to the tiny
model. Skipped where /usr/bin/chromium or playwright is missing.
"""
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from clipsvd.runs import RunStore

WORLD_LABEL = "a small CLIP pretrained on the generated world"  # clipsvd.models.WORLD_LABEL, start of
WORLD_DATASET = "world-shape-microscopy"

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = {"Model and data": "Model & data", "Train": "Train", "Singular values": "Singular values",
         "Heads": "Heads", "Explain": "Explain (TextSpan)", "Embeddings": "Embeddings", "Compare": "Compare",
         "Runs": "Runs", "Reproduce": "Reproduce"}
SHOTS = Path(os.environ.get("CLIPSVD_SHOTS", "/tmp/shots"))  # screenshots, for a person to look at

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
expect = sync_api.expect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not become healthy at {url}")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e-runs")


@pytest.fixture(scope="module")
def server(runs_root, tmp_path_factory):
    port = free_port()
    env = dict(os.environ, CLIPSVD_RUNS=str(runs_root), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    log = open(tmp_path_factory.mktemp("e2e-log") / "streamlit.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true", "--server.address=127.0.0.1",
         f"--server.port={port}", "--browser.gatherUsageStats=false", "--server.fileWatcherType=none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def page(server):
    """One browser tab, kept for the module: session state lives as long as the tab's websocket."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)  # 2 shared cores: a busy machine can take minutes per page
        tab.goto(server)
        tab.get_by_role("heading", name="clipsvd", exact=True).wait_for()
        yield tab
        context.close()
        browser.close()


WAIT_MS = 180_000  # 2 shared cores under load: a page that imports torch can take minutes


def goto(page, nav_label: str, title: str) -> None:
    """Switch page through the sidebar (client-side: session state survives) and wait for its title."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=nav_label).first.click()
    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible(timeout=WAIT_MS)
    wait_idle(page)


def wait_idle(page, timeout_ms: int = WAIT_MS) -> None:
    """Wait until the script run is over (Streamlit shows a status widget while it runs); expect() retries."""
    page.wait_for_timeout(300)  # the rerun a click starts may show its status widget only after a moment
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=timeout_ms)
    # and no element of the previous run is still drawn beside its new copy (Streamlit marks those data-stale)
    expect(page.locator('[data-stale="true"]')).to_have_count(0, timeout=timeout_ms)


def set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page)


def assert_no_exception(page) -> None:
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def screenshot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it first."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = page.evaluate('document.querySelector(\'[data-testid="stMain"]\')?.scrollHeight || 0')
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 6000))})
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size(size)


def start_training(page, epochs: int) -> None:
    goto(page, "Train", "Train")
    set_number(page, "Shots per class (0: all)", 1)
    set_number(page, "Max test images per class (0: all)", 2)
    if not page.get_by_label("epochs", exact=True).is_visible():  # the expander may still be open
        page.get_by_text("Hyperparameters:").first.click()
    set_number(page, "epochs", epochs)
    page.get_by_role("button", name="Start training").click()


def test_home_starts_on_the_world(page):
    assert page.get_by_text("The generated world", exact=False).count() > 0
    assert page.get_by_text(WORLD_LABEL, exact=False).count() > 0
    assert page.get_by_text(WORLD_DATASET, exact=False).count() > 0
    assert page.get_by_text("Its weights are random", exact=False).count() == 0  # no untrained warning
    screenshot(page, "home")
    assert_no_exception(page)


def test_model_and_data_preselects_the_world_clip(page):
    goto(page, "Model and data", "Model & data")
    expect(page.get_by_role("radio", name="Shipped (pretrained on the world)")).to_be_checked()
    page.get_by_role("button", name="Use this model").click()
    page.get_by_text(f"Model set: clipsvd-world · {WORLD_LABEL}").wait_for()
    page.get_by_role("heading", name=f"Selected dataset: {WORLD_DATASET}").wait_for()
    screenshot(page, "model-and-data")
    assert_no_exception(page)


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def png_bytes(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, shade, shade)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_zipped_imagefolder_and_refuse_a_climbing_one(page, tmp_path):
    goto(page, "Model and data", "Model & data")
    page.get_by_text("Upload zipped ImageFolder").click()
    wait_idle(page)
    upload = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
    evil = make_zip(tmp_path / "evil.zip", {"../outside.png": png_bytes(0)})
    upload.set_input_files(str(evil))
    page.get_by_text("climbs out of the folder").wait_for()
    images = {f"shapes/{cls}/{i}.png": png_bytes(60 * i) for cls in ("circle", "square") for i in range(4)}
    upload.set_input_files(str(make_zip(tmp_path / "shapes.zip", images)))
    wait_idle(page)
    page.get_by_role("button", name="Use this dataset").click()
    page.get_by_text("Dataset set: shapes (imagefolder)").wait_for()
    assert page.get_by_role("heading", name="Selected dataset: shapes (imagefolder)").count() == 1
    assert_no_exception(page)
    page.get_by_text("Built-in", exact=True).click()  # back to the default world dataset for the training tests
    wait_idle(page)
    page.get_by_role("button", name="Use this dataset").click()
    page.get_by_text(f"Dataset set: {WORLD_DATASET}").wait_for()


def test_train_a_world_run_to_completion(page, runs_root):
    start_training(page, epochs=1)
    expect(page.get_by_role("heading", name="Runs of this job")).to_be_visible(timeout=WAIT_MS)
    assert_no_exception(page)
    screenshot(page, "train-after")
    [run] = RunStore(runs_root).list()
    assert run.status == "completed" and run.config["method"] == "clip-svd"
    assert run.config["model"]["architecture"] == "clipsvd-world" and run.config["shots"] == 1
    assert run.config["dataset"]["name"] == WORLD_DATASET and WORLD_LABEL in run.config["model_source"]["label"]
    job_id = page.url.split("job=")[1].split("&")[0]
    reloaded = page.context.new_page()  # a fresh browser session: only the query string carries the job
    try:
        reloaded.goto(page.url)
        reloaded.get_by_role("heading", name=f"Job {job_id}").wait_for()
        reloaded.get_by_role("heading", name="Runs of this job").wait_for()
    finally:
        reloaded.close()


def sidebar_shows_the_job(tab) -> None:
    sidebar = tab.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text("Jobs on this server")).to_be_visible(timeout=WAIT_MS)
    expect(sidebar.get_by_role("link", name="Open job")).to_be_visible(timeout=WAIT_MS)


def test_a_running_job_shows_everywhere_and_the_selection_survives_a_reload(page, server, runs_root):
    """While a job runs: every page's sidebar (this tab after a reload, and
    a second tab) shows the job with a link; the reload keeps the selection (K = 1 from the Train form); then the
    job is cancelled from Train, and its cancelled run opens from its "σ shifts" link."""
    start_training(page, epochs=400)
    expect(page.get_by_text("training epoch").first).to_be_visible(timeout=WAIT_MS)
    screenshot(page, "train-during")
    goto(page, "Compare", "Compare")
    sidebar_shows_the_job(page)
    second = page.context.new_page()  # a second tab: a session of its own
    try:
        second.goto(f"{server}/Runs")
        expect(second.get_by_role("heading", name="Runs", exact=True)).to_be_visible(timeout=WAIT_MS)
        sidebar_shows_the_job(second)
    finally:
        second.close()
    goto(page, "Compare", "Compare")
    page.reload()  # a new session: the URL and the run store's state file bring the selection back
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_be_visible(timeout=WAIT_MS)
    sidebar_shows_the_job(page)
    expect(page.locator('[data-testid="stSidebar"]').get_by_text(f"{WORLD_DATASET} · 1-shot")).to_be_visible()
    goto(page, "Train", "Train")  # the new session's Train page opens the running job
    page.get_by_role("button", name="Cancel training").click()
    expect(page.get_by_text("job cancelled").first).to_be_visible(timeout=WAIT_MS)
    assert_no_exception(page)
    statuses = sorted(run.status for run in RunStore(runs_root).list())
    assert statuses == ["cancelled", "completed"]
    [cancelled] = [run for run in RunStore(runs_root).list() if run.status == "cancelled"]
    page.get_by_role("link", name="σ shifts").first.click()
    expect(page.get_by_role("heading", name="Singular values", exact=True)).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_role("combobox", name="Fine-tuned run")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text(cancelled.run_id).first).to_be_visible(timeout=WAIT_MS)
    wait_idle(page)
    assert_no_exception(page)


@pytest.mark.parametrize("nav_label", PAGES)
def test_every_page_renders(page, nav_label):
    goto(page, nav_label, PAGES[nav_label])
    assert_no_exception(page)
    if nav_label == "Explain":  # the world run's corpus is preset to the world's
        expect(page.get_by_role("radio", name="world", exact=True)).to_be_checked()
    if nav_label in ("Compare", "Runs"):
        screenshot(page, nav_label.lower())


def test_download_png_of_a_figure(page):
    goto(page, "Compare", "Compare")
    page.get_by_role("heading", name="Scores and costs").wait_for()
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="PNG").first.click()
    data = Path(download.value.path()).read_bytes()
    assert data.startswith(b"\x89PNG"), data[:16]
    assert download.value.suggested_filename.endswith(".png")


def test_select_tiny_model(page):
    goto(page, "Model and data", "Model & data")
    page.get_by_role("combobox", name="Architecture").click()
    page.get_by_role("option", name="clipsvd-tiny", exact=True).click()
    # the rerun that swaps the weight choices may start after wait_idle looked: expect() retries
    expect(page.get_by_role("radio", name="Random (seeded)")).to_be_checked(timeout=30_000)
    page.get_by_role("button", name="Use this model").click()
    page.get_by_text("Model set: clipsvd-tiny").wait_for()
    assert page.get_by_text("untrained — load a checkpoint").count() > 0
    assert_no_exception(page)


def test_train_form_survives_a_page_switch(page):
    """Values typed into the Train form (its own fields and a method's hyperparameters) are still there after a
    visit to another page, and Streamlit shows no duplicated-state warning for them."""
    goto(page, "Train", "Train")
    set_number(page, "Max test images per class (0: all)", 3)
    if not page.get_by_label("epochs", exact=True).is_visible():
        page.get_by_text("Hyperparameters:").first.click()
    set_number(page, "epochs", 7)
    goto(page, "Compare", "Compare")
    goto(page, "Train", "Train")
    expect(page.get_by_label("Max test images per class (0: all)", exact=True)).to_have_value("3")
    if not page.get_by_label("epochs", exact=True).is_visible():
        page.get_by_text("Hyperparameters:").first.click()
    expect(page.get_by_label("epochs", exact=True)).to_have_value("7")
    expect(page.get_by_text("Changed from the defaults: clip-svd: epochs=7")).to_be_visible()
    assert page.get_by_text("had its value set via the Session State API").count() == 0
    assert_no_exception(page)


README_START = ".venv/bin/python -m clipsvd dashboard"  # the README's start without the install check; `make dashboard` runs it


def test_the_readme_start_serves_the_dashboard_on_a_fresh_account_without_a_terminal(tmp_path, page):
    """The README's set-up command as a new user runs it: an empty HOME (no ~/.streamlit/credentials.toml, where
    Streamlit would ask "Email:" and, with no terminal, exit 255), stdin from /dev/null, no controlling terminal
    (a new session), no flags. It must print one URL, serve the home page on the world at it, and show no "Deploy"
    button. The port is whatever it prints (8501, or the next free one)."""
    readme = (ROOT / "README.md").read_text()
    assert "```bash\nmake dashboard\n```" in readme and f"`{README_START}`" in readme
    outer_make = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    recipe = subprocess.run(["make", "--no-print-directory", "-n", "dashboard"], cwd=ROOT, env=outer_make,
                            capture_output=True, text=True, check=True).stdout  # as a user types it, not under `make test`
    assert recipe.strip().splitlines()[-1] == README_START, recipe  # what `make dashboard` starts once installed
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in the clone (make install)")
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("STREAMLIT_")}  # the config decides
    env.update(HOME=str(home), CLIPSVD_RUNS=str(tmp_path / "runs"))
    process = subprocess.Popen(README_START.split(), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)  # a line at a time
    reader.start()
    try:
        deadline = time.time() + 120
        while not (urls := re.findall(r"URL: (http://\S+)", "".join(lines))):
            assert process.poll() is None and time.time() < deadline, f"exit {process.poll()}: {''.join(lines)}"
            time.sleep(0.2)
        [url] = urls
        wait_healthy(url, process)
        # a new tab of the module's browser: a second sync_playwright cannot start while the module's runs
        tab = page.context.browser.new_page()
        try:
            tab.set_default_timeout(WAIT_MS)
            assert tab.goto(url).status == 200
            tab.get_by_role("heading", name="clipsvd", exact=True).wait_for()
            expect(tab.get_by_text(WORLD_DATASET).first).to_be_visible()
            expect(tab.locator('[data-testid="stToolbar"]')).to_be_attached()  # the toolbar is drawn ...
            assert tab.get_by_role("button", name="Deploy").count() == 0  # ... without Streamlit's Deploy button
            assert_no_exception(tab)
        finally:
            tab.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and nothing else
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(timeout=5)
    output = "".join(lines)
    assert "Email" not in output and "Welcome to Streamlit" not in output, output
