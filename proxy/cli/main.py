"""`gemini-proxy`: serve, demo, and manage keys and users from the shell."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from proxy import __version__
from proxy.settings import describe, load_or_exit

DESCRIPTION = """\
A pool of Google AI Studio keys behind one endpoint that speaks the native Gemini API
and the OpenAI API. Settings come from the environment and from .env in the current
folder (the environment wins; command-line flags win over both)."""


def _settings_epilog() -> str:
    lines = ["settings (environment variables, defaults in brackets):"]
    for env, default, doc in describe():
        lines.append(f"  {env:<26} {doc} [{default}]" if default else f"  {env:<26} {doc}")
    return "\n".join(lines)


def _serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"PROXY_BIND": args.bind, "PROXY_WORKERS": args.workers, "PROXY_DB": args.db,
            "UPSTREAM_URL": args.upstream, "LOG_LEVEL": args.log_level}


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy.serving.server import serve

    settings = load_or_exit("gemini-proxy", _serve_overrides(args), args.env_file)
    return serve(settings)


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.cli.demo import run_demo

    settings = load_or_exit("gemini-proxy", _serve_overrides(args), args.env_file)
    return run_demo(settings, traffic=not args.quiet, explicit_db=args.db is not None,
                    log_level=args.log_level or "WARNING")


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", metavar="HOST:PORT", help="address to listen on (PROXY_BIND)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (PROXY_WORKERS)")
    p.add_argument("--db", metavar="PATH", help="SQLite database (PROXY_DB)")
    p.add_argument("--upstream", metavar="URL", help="Gemini API base URL (UPSTREAM_URL)")
    p.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--env-file", default=".env", metavar="PATH",
                   help="settings file to read if present (default: .env)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemini-proxy", description=DESCRIPTION, epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gemini-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the proxy (gunicorn with gevent workers)",
                       description="Run the proxy on PROXY_BIND (default 127.0.0.1:5001).")
    _add_serve_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run the proxy against a bundled fake Gemini API",
                       description="Run the proxy with demo keys against the bundled fake "
                                   "upstream on loopback, with a little background traffic, "
                                   "so you can try clients and the console without Google keys.")
    _add_serve_flags(p)
    p.add_argument("--quiet", action="store_true", help="no background traffic")
    p.set_defaults(func=cmd_demo)

    from proxy.cli import admin

    admin.add_parsers(sub)
    from proxy.cli import db as dbcli

    dbcli.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
