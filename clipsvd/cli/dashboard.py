"""`dashboard`: start the Streamlit app (this machine only by default; beyond it only with a token)."""
from __future__ import annotations

import argparse
import os
import sys


def add_dashboard(commands) -> None:
    dashboard = commands.add_parser("dashboard", help="start the dashboard (Streamlit) on the default model and dataset")
    dashboard.add_argument("--port", type=int, default=None, help="default: Streamlit's 8501, or the next free one")
    dashboard.add_argument("--address", default="localhost",
                           help="localhost (the default) serves this machine only; 0.0.0.0 serves other machines "
                                "(e.g. a cluster node reached through an SSH tunnel), and then every browser must "
                                "show the token once (printed with the URL)")
    dashboard.add_argument("--token", default=None,
                           help="the token other machines must show (…/?token=…); default $CLIPSVD_DASHBOARD_TOKEN, "
                                "else a new random one each start. Prefer the variable: a command line is visible "
                                "to every user of the machine (ps)")
    dashboard.add_argument("--allow-path", action="append", default=[], metavar="FOLDER",
                           help="served beyond localhost, a folder whose files a browser may name (data roots, "
                                "weights, run stores), repeatable; default: the run store, the folder the server "
                                "starts in and the Hugging Face cache")
    dashboard.add_argument("--upload-quota-mb", type=float, default=None,
                           help="uploads (checkpoints, unpacked zips) one browser session may keep on the server's "
                                "disk; they are deleted when the session ends (default 2048)")
    dashboard.add_argument("--headless", action=argparse.BooleanOptionalAction, default=True,
                           help="print the URL to open and ask nothing (the default; works without a terminal, e.g. "
                                "under nohup); --no-headless also opens a browser, and Streamlit then first asks for "
                                "an e-mail address where ~/.streamlit/credentials.toml is missing")
    dashboard.set_defaults(func=cmd_dashboard)


def dashboard_environment(args: argparse.Namespace, environ: dict[str, str] | None = None) -> tuple[dict[str, str], str | None]:
    """The server's environment and, when it serves beyond localhost, the token (generated when none is given).
    ClipsvdError when it would serve other machines without a token (an empty --token)."""
    import secrets

    from clipsvd.resources import ALLOW_ENV, TOKEN_ENV, is_loopback
    from clipsvd.data.uploads import QUOTA_ENV
    from clipsvd.errors import ClipsvdError

    env = dict(os.environ if environ is None else environ)
    env.setdefault("HF_HUB_OFFLINE", "1")  # no downloads behind the user's back; weights come from local paths
    env.setdefault("PYTHONUNBUFFERED", "1")  # the URL line reaches a log file (nohup) or a pipe at once
    if getattr(args, "runs_dir", None):
        env["CLIPSVD_RUNS"] = os.path.abspath(args.runs_dir)
    if args.allow_path:
        env[ALLOW_ENV] = os.pathsep.join(os.path.abspath(os.path.expanduser(p)) for p in args.allow_path)
    if args.upload_quota_mb is not None:
        if args.upload_quota_mb <= 0:
            raise ClipsvdError(f"--upload-quota-mb must be positive, got {args.upload_quota_mb}")
        env[QUOTA_ENV] = str(args.upload_quota_mb)
    token = None
    if not is_loopback(args.address):
        token = env.get(TOKEN_ENV, "").strip() if args.token is None else args.token.strip()
        if args.token is None and not token:
            token = secrets.token_urlsafe(32)
        if not token:
            raise ClipsvdError(f"--address {args.address} serves other machines, which needs a token: leave --token "
                               f"out for a random one, or give a non-empty --token / ${TOKEN_ENV}")
        env[TOKEN_ENV] = token
    else:
        env.pop(TOKEN_ENV, None)  # this machine only: nothing to ask
    return env, token


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Start the Streamlit app the package carries (the clone's app.py in an editable install)."""
    from clipsvd.resources import dashboard_script, streamlit_flags

    env, token = dashboard_environment(args)
    # developmentMode off: Streamlit turns it on (and refuses --server.port) when it is not installed under a
    # folder named site-packages, as in PYTHONPATH or .pth-linked environments.
    overrides = {"global.developmentMode": False, "server.headless": args.headless, "server.address": args.address}
    if args.port:
        overrides["server.port"] = args.port
    command = [sys.executable, "-m", "streamlit", "run", str(dashboard_script()), *streamlit_flags(overrides)]
    if token:
        port = args.port or 8501
        print(f"Serving other machines: open http://<this host>:{port}/?token={token}\n"
              f"(the port Streamlit prints below if it differs). Each browser shows the token once; a cookie keeps "
              f"it. Paths a browser may name are confined to --allow-path folders.", flush=True)
    # Become the Streamlit server (no child process): a signal sent to `clipsvd dashboard` reaches the server.
    os.execve(sys.executable, command, env)
