"""`dashboard`: start the Streamlit app."""
from __future__ import annotations

import argparse
import sys


def add_dashboard(commands) -> None:
    dashboard = commands.add_parser("dashboard", help="start the dashboard (Streamlit) on the default model and dataset")
    dashboard.add_argument("--port", type=int, default=None, help="default: Streamlit's 8501, or the next free one")
    dashboard.add_argument("--address", default="localhost", help="0.0.0.0 to serve other machines (e.g. a cluster "
                           "node reached through an SSH tunnel)")
    dashboard.add_argument("--headless", action=argparse.BooleanOptionalAction, default=True,
                           help="print the URL to open and ask nothing (the default; works without a terminal, e.g. "
                                "under nohup); --no-headless also opens a browser, and Streamlit then first asks for "
                                "an e-mail address where ~/.streamlit/credentials.toml is missing")
    dashboard.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Start the Streamlit app the package carries (the clone's app.py in an editable install)."""
    import os

    from clipsvd.resources import dashboard_script, streamlit_flags

    # developmentMode off: Streamlit turns it on (and refuses --server.port) when it is not installed under a
    # folder named site-packages, as in PYTHONPATH or .pth-linked environments.
    overrides = {"global.developmentMode": False, "server.headless": args.headless, "server.address": args.address}
    if args.port:
        overrides["server.port"] = args.port
    command = [sys.executable, "-m", "streamlit", "run", str(dashboard_script()), *streamlit_flags(overrides)]
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")  # no downloads behind the user's back; weights come from local paths
    env.setdefault("PYTHONUNBUFFERED", "1")  # the URL line reaches a log file (nohup) or a pipe at once
    if args.runs_dir:
        env["CLIPSVD_RUNS"] = os.path.abspath(args.runs_dir)
    # Become the Streamlit server (no child process): a signal sent to `clipsvd dashboard` reaches the server.
    os.execve(sys.executable, command, env)
