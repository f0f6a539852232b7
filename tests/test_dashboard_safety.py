"""The dashboard on a shared server (issue 22): the token gate, paths confined beyond localhost, user strings shown
literally, URL parameters validated, a store-wide state file, uploads within a quota and deleted, every Start click
accounted for. AppTests (headless) plus unit tests of the pieces without Streamlit."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import streamlit as st
from markdown_it import MarkdownIt
from PIL import Image
from streamlit.testing.v1 import AppTest

from clipsvd.app.access import AUTH_KEY, GATE_MESSAGE, NO_TOKEN_MESSAGE, cookie_value
from clipsvd.app.text import WORD_JOINER, md
from clipsvd.data.uploads import UPLOAD_PREFIX, UploadFolder, sweep_stale_uploads
from clipsvd.resources import ALLOW_ENV, TOKEN_ENV, is_loopback
from clipsvd.errors import ClipsvdError, DataError
from tests.conftest import TINY

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 120
TOKEN = "s3cret-token-for-tests"
EVIL_LINK, EVIL_IMAGE = "[x](http://evil.example)", "![](http://evil.example/img.png)"


@pytest.fixture
def exposed(monkeypatch, tmp_path):
    """The server as `clipsvd dashboard --address 0.0.0.0` starts it: listening beyond localhost, with a token
    and one allowed folder (plus the run store, always allowed)."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(ALLOW_ENV, str(allowed))
    monkeypatch.setenv("CLIPSVD_RUNS", str(tmp_path / "runs"))
    before = st.get_option("server.address")
    st.config.set_option("server.address", "0.0.0.0")
    yield allowed
    st.config.set_option("server.address", before)


def app(page: str | None, root: Path, query: dict | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    state = {"model_spec": TINY, "runs_root": str(root), "shots": 1, **state}
    for key, value in state.items():
        if value is None and key in ("model_spec", "shots"):
            continue  # not chosen: restored from the URL or the state file
        at.session_state[key] = value
    for key, value in (query or {}).items():
        at.query_params[key] = value
    if page:
        at.switch_page(page)
    return at.run()


def markdown_sources(at: AppTest) -> list[str]:
    """Every markdown text the page sends: markdown, captions, alerts, titles, image captions, progress texts."""
    texts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "subheader")
             for e in at.get(kind)]
    for image in at.get("imgs"):
        texts += [i.caption for i in image.proto.imgs if i.caption]
    return texts


PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
LINKS = ("link_open", "image", "html_inline", "html_block")
EMPHASIS = ("strong_open", "em_open", "s_open", "code_inline", "heading_open", "bullet_list_open",
            "ordered_list_open", "table_open", "entity")


def tokens(text: str) -> list:
    return [t for token in PARSER.parse(text) for t in [token, *(token.children or [])]]


def links_and_images(text: str, kinds: tuple[str, ...] = LINKS) -> list[str]:
    """Links, images and raw HTML (or other `kinds`) a CommonMark renderer with GFM tables and strikethrough makes
    of `text`."""
    return [t.type for t in tokens(text) if t.type in kinds]


def plain(text: str) -> str:
    """The text a reader sees of markdown source (what its text tokens hold, escapes resolved, invisible word
    joiners dropped)."""
    return "".join(t.content for t in tokens(text)
                   if t.type in ("text", "code_inline", "softbreak")).replace(WORD_JOINER, "")


# ----- escaping -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [EVIL_LINK, EVIL_IMAGE, "**bold**", "_x_ ~~y~~ <b>z</b> `c`", "# h", "- item",
                                  "1. one", "www.evil.example", ":red[alert] :material/home:", "a | b", "$x^2$",
                                  "&amp; &#60;", "mail me@evil.example", "HTTPS://EVIL.EXAMPLE"])
def test_md_shows_every_markdown_special_literally(text):
    escaped = md(text)
    assert not links_and_images(escaped, LINKS + EMPHASIS), (text, escaped)
    assert plain(escaped) == text
    # GFM's autolink literals match the text after escapes (remark-gfm): no scheme, www. or e-mail left whole
    seen = "".join(t.content for t in tokens(escaped) if t.type == "text")
    assert not re.search(r"(?i)(https?://|www\.|\w@\w)", seen), seen


# ----- the gate -----------------------------------------------------------------------------------------------
def test_loopback_addresses():
    assert is_loopback("localhost") and is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback(None) and not is_loopback("")


def test_without_a_token_a_session_sees_only_the_gate_line(exposed, tmp_path):
    for query in ({}, {"token": "wrong"}):
        at = app(None, tmp_path, query)
        assert not at.exception
        assert [t.value for t in at.text] == [GATE_MESSAGE]
        assert not at.title and not at.markdown and not at.sidebar.children.get(0)  # nothing else ran
        assert not (tmp_path / ".dashboard-state.json").exists()


def test_the_right_token_opens_the_page_sets_the_cookie_and_leaves_the_url(exposed, tmp_path):
    at = app(None, tmp_path, {"token": TOKEN})
    assert not at.exception and not at.text
    assert at.title[0].value == "clipsvd"
    assert "token" not in at.query_params  # not left in the address bar or a shared link
    [script] = [h.proto.body for h in at.get("html")]
    assert cookie_value(TOKEN) in script and TOKEN not in script  # the cookie holds an HMAC, not the token
    at.switch_page("pages/8_Runs.py").run()  # the session stays open across pages without the parameter
    assert at.title[0].value == "Runs" and not at.text


def test_served_beyond_localhost_without_any_token_nothing_runs(exposed, tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV)
    at = app(None, tmp_path, {"token": ""})
    assert [t.value for t in at.text] == [NO_TOKEN_MESSAGE] and not at.title


def test_on_localhost_nothing_is_asked(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert is_loopback(st.get_option("server.address"))  # the clone's .streamlit/config.toml
    at = app(None, tmp_path)
    assert at.title[0].value == "clipsvd" and not at.text


# ----- paths --------------------------------------------------------------------------------------------------
def test_beyond_localhost_a_data_root_outside_the_allowed_roots_is_refused_by_name(exposed, tmp_path):
    outside = tmp_path / "private"
    (outside / "secret-class").mkdir(parents=True)
    at = app("pages/1_Model_and_data.py", tmp_path / "runs", **{AUTH_KEY: True})
    at.radio(key="_w_data_source").set_value("Data root (CoOp / BiomedCoOp / ImageFolder)").run()
    at.selectbox(key="_w_kind").set_value("imagefolder").run()
    at.text_input(key="_w_root").input(str(outside)).run()
    assert not at.exception
    errors = [plain(e.value) for e in at.error]  # escaped: paths are user text
    assert any(f"'{outside}' is outside the folders this dashboard serves" in e for e in errors), errors
    assert at.button(key="use_dataset").disabled
    assert "secret-class" not in json.dumps([m for m in markdown_sources(at)])  # never listed
    at.text_input(key="_w_runs_root").input("/etc").run()  # the sidebar's run store
    assert any("Run store folder '/etc' is outside" in plain(e.value) for e in at.error)
    assert at.session_state["runs_root"] == str(tmp_path / "runs")  # unchanged


def test_beyond_localhost_a_weights_path_outside_is_refused_and_an_allowed_one_is_not(exposed, tmp_path):
    at = app("pages/1_Model_and_data.py", tmp_path / "runs", **{AUTH_KEY: True})
    at.selectbox(key="_w_arch").set_value("clipsvd-tiny").run()
    at.radio(key="_w_weight_source-open_clip").set_value("Local checkpoint file").run()
    at.text_input(key="_w_ckpt_path").input("/etc/shadow").run()
    assert any("Checkpoint path '/etc/shadow' is outside" in e.value for e in at.error)
    at.text_input(key="_w_ckpt_path").input(str(exposed / "missing.safetensors")).run()
    assert not any("is outside" in e.value for e in at.error), [e.value for e in at.error]


def test_a_url_naming_a_path_outside_or_an_unknown_run_is_ignored_and_written_nowhere(exposed, tmp_path):
    query = {"dataset": json.dumps({"kind": "imagefolder", "name": "x", "root": "/etc"}),
             "model": json.dumps({"architecture": "clipsvd-tiny", "weights": "/etc/shadow"}),
             "run": "../../etc", "seed": "3"}
    at = app("pages/8_Runs.py", tmp_path / "runs", query, model_spec=None, **{AUTH_KEY: True})
    assert not at.exception
    notes = " ".join(plain(c.value) for c in at.caption)
    assert "Ignored the link's dataset" in notes and "'/etc' is outside" in notes
    assert "Ignored the link's model" in notes and "Ignored the link's run '../../etc': not a run id" in notes
    assert "dataset_spec" not in at.session_state and at.session_state["data_seed"] == 3
    assert "run_id" not in at.session_state
    assert not any("is outside" in e.value for e in at.error)  # the run store itself is allowed
    state = (tmp_path / "runs" / ".dashboard-state.json").read_text()
    assert "/etc" not in state and "shadow" not in state


# ----- injection and URL validation ---------------------------------------------------------------------------
def test_a_crafted_dataset_name_in_the_url_renders_literally_and_never_reaches_the_state_file(tmp_path):
    for name in (EVIL_LINK, EVIL_IMAGE):
        at = app(None, tmp_path, {"dataset": json.dumps({"kind": "builtin", "name": name})})
        assert not at.exception
        texts = markdown_sources(at)
        assert not any(links_and_images(t) for t in texts), [t for t in texts if links_and_images(t)]
        assert any(f"Ignored the link's dataset '{json.dumps({'kind': 'builtin', 'name': name})}'" in plain(t)
                   for t in texts)
        chosen = at.session_state["dataset_spec"] if "dataset_spec" in at.session_state else None
        assert chosen is None or chosen.name == "world-shape-microscopy"  # the default, or the store's default
        assert "evil" not in (tmp_path / ".dashboard-state.json").read_text()
        fresh = app("pages/8_Runs.py", tmp_path)  # the next, unrelated session
        assert not any("evil" in t for t in markdown_sources(fresh))


def test_an_unknown_run_model_or_shots_in_the_url_is_ignored_with_a_note(tmp_path):
    query = {"run": "no-such-run", "model": json.dumps({"architecture": "no-such-arch"}), "shots": "-4"}
    at = app("pages/3_Singular_values.py", tmp_path, query, model_spec=None, shots=None)
    assert not at.exception
    notes = [plain(c.value) for c in at.caption if "Ignored" in c.value]
    assert len(notes) == 3, notes
    assert "run_id" not in at.session_state and "run" not in at.query_params


def make_imagefolder(root: Path, classes: list[str], broken: str | None = None) -> Path:
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(3):
            Image.new("RGB", (8, 8), (40 * i, 20 * j, 0)).save(root / name / f"{j}.png")
    if broken:
        for j in range(6):
            (root / classes[0] / f"{broken}{j}.png").write_bytes(b"\x89PNG not really an image")
    return root


def test_class_folders_named_like_markdown_render_literally(tmp_path):
    from clipsvd.data import DatasetSpec

    root = make_imagefolder(tmp_path / "data", ["**bold**", EVIL_LINK.replace("/", "_"), "plain"])
    at = app("pages/1_Model_and_data.py", tmp_path, dataset_spec=DatasetSpec("imagefolder", "x", str(root)))
    assert not at.exception
    texts = markdown_sources(at)
    assert "**bold**" in [plain(t) for t in texts], texts  # the class name, literally (inside the page's own bold)
    assert not any(links_and_images(t) for t in texts), [t for t in texts if links_and_images(t)]
    assert "x" not in [plain(t) for t in texts]  # the link's text alone would mean it became a link


def test_undecodable_images_are_a_message_not_an_exception_box(tmp_path):
    from clipsvd.data import DatasetSpec

    root = make_imagefolder(tmp_path / "data", ["a", "b"], broken="broken")
    spec = DatasetSpec("imagefolder", "x", str(root))
    at = app("pages/1_Model_and_data.py", tmp_path, dataset_spec=spec, shots=None)
    assert not at.exception, [e.value for e in at.exception]
    assert any("broken" in e.value for e in at.error), [e.value for e in at.error]


# ----- the shared state file ----------------------------------------------------------------------------------
def test_the_state_file_holds_only_store_wide_defaults(tmp_path):
    from clipsvd.data import DatasetSpec

    root = make_imagefolder(tmp_path / "private-data", ["cat", "dog"])
    app(None, tmp_path, dataset_spec=DatasetSpec("imagefolder", "mine", str(root)),
        model_spec=TINY.__class__("clipsvd-tiny", str(tmp_path / "w.safetensors")), run_id="r1")
    state = json.loads((tmp_path / ".dashboard-state.json").read_text())
    assert set(state) <= {"shots", "seed", "dataset", "model"}
    assert "dataset" not in state and "model" not in state and "private-data" not in json.dumps(state)
    fresh = app("pages/8_Runs.py", tmp_path, model_spec=None)  # a new session opens on the defaults, not on it
    assert "dataset_spec" not in fresh.session_state and "run_id" not in fresh.session_state


# ----- Start training -----------------------------------------------------------------------------------------
def test_a_start_click_followed_at_once_by_a_page_switch_still_creates_its_job(tmp_path):
    """The click's rerun is replaced by the page switch's (what a user switching right after the click sends): the
    job is created in the button's callback, before any page code runs, so the click is not lost."""
    from clipsvd.app.caches import job_registry

    at = app("pages/2_Train.py", tmp_path)
    before = {j.job_id for j in job_registry().list()}
    at.button(key="start_training").click()
    at.switch_page("pages/8_Runs.py").run()
    assert not at.exception
    new = [j for j in job_registry().list() if j.job_id not in before]
    assert len(new) == 1 and at.session_state["job_id"] == new[0].job_id
    job_registry().cancel(new[0].job_id)
    job_registry().wait(new[0].job_id, 60)


def test_every_start_click_says_what_it_did(tmp_path, monkeypatch):
    """A job started is named; a click that cannot create one says why (before: silence either way)."""
    from clipsvd.app.caches import job_registry
    from clipsvd.training.jobs import JobRegistry

    def refuse(self, configs, store):
        raise ClipsvdError("the run store cannot be written")

    monkeypatch.setattr(JobRegistry, "submit", refuse)
    at = app("pages/2_Train.py", tmp_path)
    before = len(job_registry().list())
    at.button(key="start_training").click().run()
    assert not at.exception
    assert [plain(e.value) for e in at.error] == ["No job was started: the run store cannot be written"]
    assert len(job_registry().list()) == before
    monkeypatch.undo()
    at.button(key="start_training").click().run()
    [started] = [s.value for s in at.success]
    job_id = at.session_state["job_id"]
    assert plain(started) == f"Started job {job_id}."
    job_registry().cancel(job_id)
    job_registry().wait(job_id, 60)


# ----- uploads ------------------------------------------------------------------------------------------------
def test_upload_folder_quota_and_deletion_when_its_session_state_goes(tmp_path):
    folder = UploadFolder("session-a", quota_bytes=1000, base=tmp_path)
    path = folder.path
    assert path.name.startswith(f"{UPLOAD_PREFIX}{os.getpid()}-session-a-")
    folder.write("a/ckpt.bin", b"x" * 600)
    with pytest.raises(DataError, match="upload quota of 0 MiB"):
        folder.write("b/ckpt.bin", b"x" * 600)
    assert not (path / "b").exists() and folder.used() == 600
    with pytest.raises(DataError, match="outside the upload folder"):
        folder.write("../escape.bin", b"x")
    del folder  # what Streamlit does with a closed session's state
    assert not path.exists()


def test_zip_extraction_counts_against_the_quota(tmp_path):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data/a/1.bin", b"x" * 800)
    folder = UploadFolder("s", quota_bytes=500, base=tmp_path)
    with pytest.raises(DataError, match="refusing to extract"):
        folder.extract_zip(buffer.getvalue(), "zip-1", source="big.zip")
    folder.remove()
    assert not folder.path.exists()


def test_sweep_removes_folders_of_dead_servers_and_gone_sessions_only(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old_style = tmp_path / f"{UPLOAD_PREFIX}abc123"
    of_dead_server = tmp_path / f"{UPLOAD_PREFIX}{dead.pid}-sess-xyz"
    gone_session = tmp_path / f"{UPLOAD_PREFIX}{os.getpid()}-gone-abc"
    live_session = tmp_path / f"{UPLOAD_PREFIX}{os.getpid()}-live-abc"
    idle_but_recent = tmp_path / f"{UPLOAD_PREFIX}{os.getpid()}-recent-abc"
    for folder in (old_style, of_dead_server, gone_session, live_session, idle_but_recent):
        folder.mkdir()
    old = time.time() - 3600
    for folder in (gone_session, live_session):
        os.utime(folder, (old, old))
    removed = sweep_stale_uploads(tmp_path, live_owner=lambda tag: tag in ("live", "recent"))
    assert sorted(removed) == sorted([old_style, of_dead_server, gone_session])
    assert live_session.exists() and idle_but_recent.exists()
    removed = sweep_stale_uploads(tmp_path, live_owner=lambda tag: False)  # both sessions now gone
    assert removed == [live_session]  # idle for an hour
    assert idle_but_recent.exists()  # used within the grace period: its session may still reconnect


# ----- the command line ---------------------------------------------------------------------------------------
def dashboard_args(*argv: str):
    from clipsvd.cli.parser import build_parser

    return build_parser().parse_args(["dashboard", *argv])


def test_dashboard_generates_a_token_beyond_localhost_and_refuses_an_empty_one(tmp_path):
    from clipsvd.cli.dashboard import dashboard_environment

    env, token = dashboard_environment(dashboard_args(), {})
    assert token is None and TOKEN_ENV not in env  # localhost: nothing to ask
    env, token = dashboard_environment(dashboard_args("--address", "0.0.0.0", "--allow-path", str(tmp_path),
                                                      "--upload-quota-mb", "100"), {})
    assert token and len(token) >= 32 and env[TOKEN_ENV] == token
    assert env[ALLOW_ENV] == str(tmp_path) and env["CLIPSVD_UPLOAD_QUOTA_MB"] == "100.0"
    env, token = dashboard_environment(dashboard_args("--address", "0.0.0.0"), {TOKEN_ENV: "given"})
    assert token == "given"
    with pytest.raises(ClipsvdError, match="needs a token"):
        dashboard_environment(dashboard_args("--address", "0.0.0.0", "--token", ""), {})


# ----- pages 3, 4, 6 (Singular values, Heads, Embeddings) --------------------------------------------------------
CRAFTED_CLASSES = ["**bold**", "<b>x</b>", "[x](e.html)"]  # "/" cannot be in a folder name; a relative link can
CRAFTED_DATASET = "**bold** <b>x</b> [x](http://e)"


@pytest.fixture(scope="module")
def crafted_run(tmp_path_factory):
    """One tiny CLIP-SVD run of an image folder whose dataset and class names are markdown and HTML."""
    from clipsvd.data import DatasetSpec
    from clipsvd.runs import RunStore
    from clipsvd.training import ExperimentConfig, run_experiment

    folder = tmp_path_factory.mktemp("crafted")
    root = make_imagefolder(folder / "data", CRAFTED_CLASSES)
    config = ExperimentConfig(method="clip-svd", model=TINY, dataset=DatasetSpec("imagefolder", CRAFTED_DATASET,
                                                                               str(root)),
                              shots=1, seed=1, device="cpu", hyperparameters={"epochs": 1}, max_test_per_class=2)
    run = run_experiment(config, RunStore(folder / "runs"))
    assert run.status == "completed", run.message
    return folder, run


@pytest.mark.parametrize("page", ["pages/3_Singular_values.py", "pages/4_Heads.py", "pages/6_Embeddings.py"])
def test_analysis_pages_show_crafted_names_literally(page, crafted_run):
    folder, run = crafted_run
    from clipsvd.data import DatasetSpec

    at = app(page, folder / "runs", run_id=run.run_id,
             dataset_spec=DatasetSpec("imagefolder", CRAFTED_DATASET, str(folder / "data")))
    assert not at.exception, [e.value for e in at.exception]
    texts = markdown_sources(at)
    assert not any(links_and_images(t) for t in texts), [t for t in texts if links_and_images(t)]
    shown = [plain(t) for t in texts]
    assert any(CRAFTED_DATASET in s for s in shown), shown  # the sidebar's selection, literally
    assert not any(s == "bold" or s.startswith("bold ") for s in shown)  # ** consumed would leave the word alone
    options = [o for box in at.selectbox for o in box.options]
    assert any(CRAFTED_DATASET in o for o in options), options  # the run picker (plain text)


def test_umap_legend_and_hover_show_class_names_literally():
    """Plotly draws trace names as its own HTML subset (<b>, <a href>) and reads %{…} in hover templates: the
    Embeddings figure's class names are escaped and never template text."""
    import pandas as pd
    from html import unescape

    from clipsvd.plots import umap_figure

    labels = [*CRAFTED_CLASSES, '<a href="http://evil.example">a</a>', "%{x}"]
    layout = pd.DataFrame([{"label": label, "which": which, "x": float(i), "y": 1.0, "index": i}
                           for i, label in enumerate(labels) for which in ("before", "after")])
    fig = umap_figure(layout)
    names = [trace.name for trace in fig.data if trace.showlegend]
    assert [unescape(n) for n in names] == labels
    assert not any("<" in n or ">" in n for n in names), names
    assert all(trace.hovertemplate == "%{fullData.name}<br>image %{customdata}<extra></extra>" for trace in fig.data)
