"""The `gemini-proxy keys …` and `gemini-proxy users …` commands.

The main CLI builds its parser and calls `add_parsers(subparsers)`; each leaf command sets
`func`, a handler taking the parsed args and returning the exit code. The database comes from
the same settings loader `serve` uses (--db, else PROXY_DB from the environment or .env);
a command never creates one, so a typo or the wrong folder cannot leave the operator working
on an empty pool the proxy never reads. Google keys are only ever printed masked; a generated
user key is printed once, when it is created.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from typing import Any, Callable, Iterable

from sqlite_utils import Database

from proxy.store import (
    StoreError,
    add_key,
    add_user,
    disable_key,
    enable_key,
    find_key,
    list_keys,
    list_users,
    migrate,
    open_db,
    remove_key,
    remove_user,
    reset_key,
    set_limits,
)
from proxy.humanize import count, span
from proxy.settings import Settings, load_or_exit
from proxy.store.limits import KINDS, forget_learned, key_limits, limit_said, set_limit
from proxy.store.util import mask_key

EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def db_path(args: argparse.Namespace) -> str:
    """Return the database path exactly as `serve` would resolve it (--db, PROXY_DB, .env)."""
    return load_or_exit("gemini-proxy", {"PROXY_DB": getattr(args, "db", None)},
                        getattr(args, "env_file", ".env")).db_path


def add_db_options(parser: argparse.ArgumentParser) -> None:
    """Add --db and --env-file, which every store command accepts."""
    parser.add_argument("--db", metavar="PATH", default=None,
                        help="SQLite database (default: PROXY_DB from the environment or .env, "
                             f"else {Settings.db_path})")
    parser.add_argument("--env-file", default=".env", metavar="PATH",
                        help="settings file to read if present (default: .env)")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the `keys` and `users` command families to the main CLI's subparsers."""
    _add_keys(subparsers)
    _add_users(subparsers)


def main(argv: list[str] | None = None) -> int:
    """Run the keys/users commands on their own (`python -m proxy.cli.admin keys list`)."""
    parser = argparse.ArgumentParser(prog="gemini-proxy", description="Manage the key pool and user keys.")
    add_parsers(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return args.func(args)


# -- parser construction ---------------------------------------------------------------------

def leaf(group: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """Add a leaf command parser that accepts the database options."""
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    parser = group.add_parser(name, **kwargs)
    add_db_options(parser)
    return parser


def _family(subparsers: argparse._SubParsersAction, name: str, help: str,
            description: str) -> argparse._SubParsersAction:
    parser = subparsers.add_parser(name, help=help, description=description)
    group = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION")

    def usage(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    parser.set_defaults(func=usage)
    return group


def _add_keys(subparsers: argparse._SubParsersAction) -> None:
    group = _family(
        subparsers, "keys", "manage the pool of Google keys",
        "Add, list, enable, disable, remove and reset the Google AI Studio keys the proxy "
        "spreads requests over. Keys are shown masked (AIza…x7Qc). A REF is a key's id, "
        "label, masked form (three dots work for …) or full value.",
    )
    p = leaf(
        group, "add", help="add a key (or several from stdin)",
        description="Add a Google key to the pool. Re-adding a removed key brings it back.",
        epilog="Pass - as VALUE to read keys from stdin, one per line: this keeps them out of "
        "your shell history and the process list.\n\n  gemini-proxy keys add - < keys.txt",
    )
    p.add_argument("value", metavar="VALUE", help="the key, or - to read keys from stdin")
    p.add_argument("--label", help="a name to recognise the key by (e.g. the account it belongs to)")
    p.set_defaults(func=_command(_keys_add))

    p = leaf(
        group, "list", help="show the keys with their health and usage",
        description="Show every key with its state (usable, cooling, sick: most recent tries "
        "failed, dead: with the reason, disabled), cooldowns still running (per model, with "
        "time left), TODAY/DAY: requests today against the daily limit of the model closest "
        "to it (no-quota when the key's tier has none for a model), success rate over the "
        "last 15 minutes, failed tries over the last 5 and 60 minutes, tries and tokens "
        "since midnight Pacific time (when Google's daily quotas reset), and RPM/CAP: tries "
        "this minute on the key's busiest model against its requests-per-minute limit (the "
        "cap, or the limit learned from Google). Tries count every upstream attempt made "
        "with the key, retries included. --quotas lists every key and model instead.",
    )
    p.add_argument("--all", action="store_true", help="include removed keys")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quotas", action="store_true",
                   help="one line per key and model in use: requests today / daily limit, this "
                   "minute / minute limit, input tokens this minute / limit, no quota")
    p.add_argument("--state", metavar="STATE", help="only keys in this state (usable, cooling, sick, "
                   "dead, disabled, removed)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N keys (with --offset: a page)")
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N keys")
    p.set_defaults(func=_command(_keys_list))

    for name, action, text in (
        ("enable", enable_key, "make a key usable again: clears its dead mark and cooldowns"),
        ("disable", disable_key, "stop using a key until it is enabled (history is kept)"),
        ("remove", remove_key, "retire a key (re-adding its value brings it back)"),
        ("reset", reset_key, "clear a key's dead mark, cooldowns, last error and statistics"),
    ):
        p = leaf(group, name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("ref", metavar="REF", help="id, label, masked form or value of the key")
        p.set_defaults(func=_command(_key_action(name, action)))

    p = leaf(group, "cap", help="set a key's limits (they override what the pool learned)",
             description="Limit what the pool sends this key, across all workers, so it paces "
             "itself instead of collecting 429s. The pool also learns each key's limits from "
             "the quota Google names in a 429; a limit set here overrides the learned one. "
             "Without --model it applies to every model (per model: each model has its own "
             "count). Use a little less than the key's Google limit.",
             epilog="  gemini-proxy keys cap main --rpm 9\n"
             "  gemini-proxy keys cap main --rpd 240 --model gemini-2.5-flash")
    p.add_argument("ref", metavar="REF", help="id, label, masked form or value of the key")
    p.add_argument("--rpm", type=_limit, metavar="N",
                   help="requests per minute per model (0 or none lifts the cap)")
    p.add_argument("--rpd", type=_limit, metavar="N", help="requests per day (from midnight Pacific)")
    p.add_argument("--tpm", type=_limit, metavar="N", help="input tokens per minute")
    p.add_argument("--model", default="", metavar="MODEL", help="only for this model")
    p.set_defaults(func=_command(_keys_cap))

    p = leaf(group, "limits", help="show a key's limits, learned and set; forget learned ones",
             description="Show the limits the pool paces a key by, per model: learned from "
             "Google's 429s (with when) or set with `keys cap`. A learned limit of 0 means the "
             "key's tier has no quota for that model: the pool leaves it until midnight "
             "Pacific. --forget drops what was learned (for one --model, or all).")
    p.add_argument("ref", metavar="REF", help="id, label, masked form or value of the key")
    p.add_argument("--forget", action="store_true", help="forget the learned limits")
    p.add_argument("--model", default=None, metavar="MODEL", help="only this model")
    p.set_defaults(func=_command(_keys_limits))


def _add_users(subparsers: argparse._SubParsersAction) -> None:
    group = _family(
        subparsers, "users", "manage user keys (who may call the proxy)",
        "Clients authenticate to the proxy with a user key; the database keeps only its "
        "sha256 hash. A REF is a user's id or label.",
    )
    p = leaf(
        group, "add", help="create a user key",
        description="Create a user and print their key. The key is shown once: only its hash "
        "is stored, so it cannot be shown again.",
    )
    p.add_argument("label", metavar="LABEL", help="who the key is for (no spaces)")
    p.add_argument("--key", help="use this key instead of generating one (at least 16 characters)")
    p.set_defaults(func=_command(_users_add))

    p = leaf(
        group, "list", help="show users with their limits and usage",
        description="Show every user with limits, and requests and tokens today (since "
        "midnight Pacific time) and over the last 7 days.",
    )
    p.add_argument("--all", action="store_true", help="include removed users")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_command(_users_list))

    p = leaf(group, "remove", help="revoke a user key", description="Revoke a user's key.")
    p.add_argument("ref", metavar="REF", help="id or label of the user")
    p.set_defaults(func=_command(_users_remove))

    p = leaf(
        group, "limits", help="show or change a user's limits",
        description="Show a user's limits, or change the ones given. 0 (or 'none') lifts a "
        "numeric limit; an empty --models '' allows every model.",
        epilog="  gemini-proxy users limits alice --rpm 30 --tpd 2000000 --models 'gemini-2.5-flash|gemini-2.5-pro'",
    )
    p.add_argument("ref", metavar="REF", help="id or label of the user")
    p.add_argument("--rpm", type=_limit, metavar="N", help="requests per minute (0 or none: no limit)")
    p.add_argument("--tpd", type=_limit, metavar="N", help="tokens per day (0 or none: no limit)")
    p.add_argument("--models", metavar="A|B", help="allowed models, separated by | or , ('' for all)")
    p.set_defaults(func=_command(_users_limits))


def _limit(text: str) -> int:
    if text.strip().lower() in ("none", "off", "unlimited"):
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


# -- running commands -----------------------------------------------------------------------

def _command(body: Callable[[Database, argparse.Namespace], int | None]) -> Handler:
    """Wrap a command body: open the existing database, turn store errors into one line."""

    def handler(args: argparse.Namespace) -> int:
        path = db_path(args)
        try:
            db = open_db(path, create=False)
            try:
                migrate(db)
                return body(db, args) or 0
            finally:
                db.close()
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except sqlite3.Error as exc:
            print(f"error: database {path}: {exc}", file=sys.stderr)
            return 1

    return handler


def _keys_add(db: Database, args: argparse.Namespace) -> int:
    values = _stdin_keys() if args.value == "-" else [args.value]
    if not values:
        print("error: no keys on stdin", file=sys.stderr)
        return EXIT_USAGE
    for value in values:
        before = find_key(db, value.strip()) if value.strip() else None
        key_id = add_key(db, value, args.label)
        if before is None or before["id"] != key_id:
            print(f"added key {key_id} {mask_key(value.strip())}" + (f" ({args.label})" if args.label else ""))
        elif before["status"] == "removed":
            print(f"key {key_id} {before['masked']} was removed; it is active again")
        else:
            print(f"key {key_id} {before['masked']} is already in the pool ({before['status']})")
    return 0


def _stdin_keys() -> list[str]:
    lines = (line.strip() for line in sys.stdin)
    return [line for line in lines if line and not line.startswith("#")]


def _keys_list(db: Database, args: argparse.Namespace) -> int:
    keys = list_keys(db, include_removed=args.all or args.state == "removed")
    if args.state:
        keys = [k for k in keys if k["state"] == args.state]
    if args.offset or args.limit is not None:
        keys = keys[max(0, args.offset):][:args.limit if args.limit is not None else None]
    if args.json:
        print(json.dumps(keys, indent=2, ensure_ascii=False))
        return 0
    if not keys:
        print("no keys yet; add one with: gemini-proxy keys add VALUE" if not args.state
              else f"no {args.state} keys")
        return 0
    if args.quotas:
        return _quota_table(keys)
    ts = time.time()
    rows = [
        [
            str(k["id"]), k["masked"], k["label"] or "", k["state"],
            ", ".join(f"{c['model'] or 'all'} {span(c['cool_until'] - ts)}" for c in k["cooldowns"]) or "-",
            _day_use(k),
            "-" if k["success_rate"] is None else f"{k['success_rate']:.0%}",
            f"{count(sum(k['failed_5m'].values()))}/{count(sum(k['failed_60m'].values()))}",
            count(k["attempts_today"]), count(k["tokens_today"]),
            f"{k['rpm_used']}/{k['rpm_limit']}" if k["rpm_limit"] else "-",
            # As in the console: why a dead key is dead, else the last error it got.
            _one_line(k["invalid_reason"] if k["state"] == "dead" else k["last_error"]),
        ]
        for k in keys
    ]
    headers = ["ID", "KEY", "LABEL", "STATUS", "COOLING", "TODAY/DAY", "OK 15M", "FAILED 5M/1H",
               "TRIES TODAY", "TOK TODAY", "RPM/CAP", "LAST ERROR"]
    _table(headers, rows, right={0, 5, 6, 7, 8, 9, 10})
    return 0


def _day_use(k: dict[str, Any]) -> str:
    """Return requests today against the daily limit closest to being spent (or no-quota)."""
    if k["day_limit"]:
        return f"{count(k['day_used'])}/{count(k['day_limit'])}"
    return "no-quota" if k["no_quota"] else "-"


def _quota_table(keys: list[dict[str, Any]]) -> int:
    rows = []
    for k in keys:
        for q in k["quotas"]:
            learned = [kind for kind, source in q["sources"].items() if source == "learned"]
            rows.append([
                str(k["id"]), k["masked"], q["model"],
                "no quota" if q["no_quota"] else _of(q["today"], q["rpd"]),
                _of(q["minute"], q["rpm"]), _of(q["tokens_minute"], q["tpm"]),
                ", ".join(learned) or "-",
            ])
    if not rows:
        print("no key has been used or has a known limit today")
        return 0
    _table(["ID", "KEY", "MODEL", "TODAY/DAY", "MINUTE/RPM", "TOKENS/TPM", "LEARNED"], rows,
           right={0, 3, 4, 5})
    return 0


def _of(used: int, limit: int | None) -> str:
    return f"{count(used)}/{count(limit)}" if limit else count(used)


def _keys_cap(db: Database, args: argparse.Namespace) -> int:
    given = {kind: getattr(args, kind) for kind in KINDS if getattr(args, kind) is not None}
    if not given:
        print("error: say which limit: --rpm, --rpd or --tpm", file=sys.stderr)
        return EXIT_USAGE
    for kind, value in given.items():
        key = set_limit(db, args.ref, kind, value, args.model)
        print(f"key {key['id']} {key['masked']} {limit_said(kind, value, args.model)}")
    return 0


def _keys_limits(db: Database, args: argparse.Namespace) -> int:
    key = find_key(db, args.ref)
    if key is None:
        print(f"error: no key matches {args.ref!r} (use an id, label or masked form from `keys list`)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.forget:
        gone = forget_learned(db, str(key["id"]), args.model)
        print(f"key {key['id']} {key['masked']}: {gone} learned limit(s) forgotten")
        return 0
    rows = [r for r in key_limits(db, [key["id"]]) if args.model is None or r["model"] in (args.model, "")]
    if key["rpm_cap"]:
        rows.insert(0, {"model": "", "kind": "rpm", "source": "operator", "value": key["rpm_cap"],
                        "learned_at": None})
    if not rows:
        print(f"key {key['id']} {key['masked']}: no limits known yet (they are learned from "
              "Google's 429s, or set with `keys cap`)")
        return 0
    ts = time.time()
    out = [[r["model"] or "(every model)", KINDS[r["kind"]],
            "no quota" if r["value"] == 0 else count(r["value"]),
            "learned" if r["source"] == "learned" else "set",
            f"{span(ts - r['learned_at'])} ago" if r.get("learned_at") else "-"] for r in rows]
    print(f"key {key['id']} {key['masked']}")
    _table(["MODEL", "LIMIT", "VALUE", "SOURCE", "WHEN"], out, right={2})
    return 0


def _key_action(verb: str, action: Callable[[Database, str], dict[str, Any]]
                ) -> Callable[[Database, argparse.Namespace], int]:
    past = {"enable": "enabled", "disable": "disabled", "remove": "removed", "reset": "reset"}[verb]

    def body(db: Database, args: argparse.Namespace) -> int:
        key = action(db, args.ref)
        label = f" ({key['label']})" if key.get("label") else ""
        print(f"key {key['id']} {key['masked']}{label} {past}")
        return 0

    return body


def _users_add(db: Database, args: argparse.Namespace) -> int:
    user_id, key = add_user(db, args.label, args.key)
    if args.key is not None:
        print(f"added user {user_id} {args.label!r} with the given key ({mask_key(key)})")
        return 0
    print(f"added user {user_id} {args.label!r}")
    print(f"key: {key}")
    print("Store this key now: it is shown only once (the database keeps only its hash).")
    return 0


def _users_list(db: Database, args: argparse.Namespace) -> int:
    users = list_users(db, include_removed=args.all)
    if args.json:
        print(json.dumps(users, indent=2, ensure_ascii=False))
        return 0
    if not users:
        print("no users yet; add one with: gemini-proxy users add LABEL")
        return 0
    rows = [
        [
            str(u["id"]), u["label"], u["masked"] or "", u["status"] or "",
            _or_none(u["rpm_limit"]), _or_none(u["tpd_limit"]), "|".join(u["models"]) or "any",
            count(u["requests_today"]), count(u["tokens_today"]),
            count(u["requests_7d"]), count(u["tokens_7d"]),
        ]
        for u in users
    ]
    headers = ["ID", "LABEL", "KEY", "STATUS", "RPM", "TPD", "MODELS", "REQ TODAY", "TOK TODAY", "REQ 7D", "TOK 7D"]
    _table(headers, rows, right={0, 4, 5, 7, 8, 9, 10})
    return 0


def _users_remove(db: Database, args: argparse.Namespace) -> int:
    user = remove_user(db, args.ref)
    print(f"user {user['id']} {user['label']!r} removed; their key no longer works")
    return 0


def _users_limits(db: Database, args: argparse.Namespace) -> int:
    user = set_limits(db, args.ref, rpm=args.rpm, tpd=args.tpd, models=args.models)
    models = user["allowed_models"].replace("|", ", ") if user["allowed_models"] else "any"
    print(
        f"user {user['id']} {user['label']!r}: rpm {_or_none(user['rpm_limit'])}, "
        f"tpd {_or_none(user['tpd_limit'])}, models {models}"
    )
    return 0


# -- formatting -----------------------------------------------------------------------------

def _table(headers: list[str], rows: Iterable[list[str]], right: set[int] = frozenset()) -> None:
    """Print rows as aligned columns (right-aligned where numeric)."""
    rows = list(rows)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    print(line(headers))
    for row in rows:
        print(line(row))


def _one_line(text: str | None, limit: int = 100) -> str:
    """Return `text` on one line, cut to `limit` characters (Google's quota errors run to several lines)."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _or_none(value: int | None) -> str:
    return "none" if not value else str(value)


if __name__ == "__main__":
    sys.exit(main())
