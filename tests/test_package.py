"""The wheel works without the clone: build it, install it into a fresh virtual environment, and use it from a
folder outside the clone — the console command, a one-epoch training run of the defaults, `analyze` with a built-in
corpus, and `clipsvd dashboard` serving every page to headless Chromium.

The fresh environment gets its third-party dependencies from the tested environment (a path in a .pth file that
skips clipsvd's own editable install), so this runs offline and in seconds rather than reinstalling torch; pip
still resolves the wheel's declared dependencies against them.
"""
import json
import os
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import pytest

from tests.test_e2e import CHROMIUM, CHROMIUM_ARGS, PAGES, free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path, env: dict, timeout: float = 300) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(the fresh environment's bin folder, an environment for subprocesses) with the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"),
         str(ROOT)], work, env)
    wheel = next((work / "dist").glob("clipsvd-*.whl"))

    target = work / "env"
    venv.create(target, with_pip=False)
    tested = Path(sysconfig.get_paths()["purelib"])
    deps = work / "deps"  # the tested environment minus clipsvd itself
    deps.mkdir()
    for entry in tested.iterdir():
        if not entry.name.lower().startswith(("clipsvd", "__editable__")):
            (deps / entry.name).symlink_to(entry)
    site = next(target.glob("lib/python*/site-packages"))
    (site / "tested-dependencies.pth").write_text(f"{deps}\n")
    python = target / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)], work, env)
    return target / "bin", env


def test_the_installed_package_does_not_come_from_the_clone(installed, tmp_path):
    bin_dir, env = installed
    where = run([str(bin_dir / "python"), "-c", "import clipsvd, clipsvd.resources as r; "
                 "print(clipsvd.__file__); print(r.corpus_dir()); print(r.dashboard_script())"], tmp_path, env)
    for line in where.split():
        assert str(ROOT) not in line and str(bin_dir.parent) in line, where
    assert "usage: clipsvd" in run([str(bin_dir / "clipsvd"), "--help"], tmp_path, env)
    assert "clipsvd-world" in run([str(bin_dir / "clipsvd"), "models"], tmp_path, env)


def test_train_and_analyze_from_the_wheel(installed, tmp_path):
    bin_dir, env = installed
    clipsvd = [str(bin_dir / "clipsvd"), "--runs-dir", str(tmp_path / "runs")]
    out = run([*clipsvd, "train", "--method", "clip-svd", "--epochs", "1", "--shots", "2", "--max-test-per-class", "3",
               "--device", "cpu"], tmp_path, env)
    assert "completed" in out, out
    run_id = next((tmp_path / "runs").iterdir()).name
    run([*clipsvd, "analyze", run_id, "--what", "sv", "textspan", "--corpus", "world", "--images-per-class", "2",
         "--layers", "3", "--out", str(tmp_path / "analysis"), "--device", "cpu"], tmp_path, env)
    written = {p.name for p in (tmp_path / "analysis").iterdir()}
    assert any(name.startswith("textspan") and name.endswith(".csv") for name in written), written
    config = json.loads((tmp_path / "runs" / run_id / "config.json").read_text())
    assert config["model"]["architecture"] == "clipsvd-world" and config["steps"] > 0


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")
def test_dashboard_serves_every_page_from_the_wheel(installed, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    bin_dir, env = installed
    port = free_port()
    env = dict(env, CLIPSVD_RUNS=str(tmp_path / "runs"))
    server = subprocess.Popen([str(bin_dir / "clipsvd"), "dashboard", "--headless", "--port", str(port),
                               "--address", "127.0.0.1"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            tab = browser.new_page()
            tab.set_default_timeout(120_000)
            response = tab.goto(url)
            assert response.status == 200
            tab.get_by_role("heading", name="clipsvd", exact=True).wait_for()
            for nav_label, title in PAGES.items():
                tab.locator('[data-testid="stSidebarNav"] a').filter(has_text=nav_label).first.click()
                tab.get_by_role("heading", name=title, exact=True).first.wait_for()
                tab.wait_for_load_state("networkidle")
                time.sleep(0.5)
                exceptions = tab.locator('[data-testid="stException"]')
                assert exceptions.count() == 0, f"{nav_label}: {exceptions.first.inner_text()}"
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
