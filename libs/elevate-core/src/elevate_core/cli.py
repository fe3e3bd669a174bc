"""The `elevate` command line.

    elevate policy check FILE [FILE ...] [--strict] [--group-members GROUP=u1,u2 ...]
    elevate policy explain FILE --user NAME [--groups g1,g2] --account ID_OR_NAME
                           [--ou-path Workloads/Prod] --permission-set NAME [--break-glass]

    elevate dlq list [--from-offset N] [--to-offset M] [--type CE_TYPE ...]
    elevate dlq redrive [--from-offset N] [--to-offset M] [--type CE_TYPE ...] [--dry-run]

    elevate topics create [--replication-factor N] [--partitions N]
    elevate migrate --service NAME


    elevate healthcheck [--path /healthz]

`policy check` and `policy explain` work offline (no AWS, no services): `check` validates a
policy file for a GitOps pipeline, `explain` evaluates one question with directory data
given as flags. Exit status: 0 success / eligible, 1 invalid policy / not eligible, 2 usage
error. Problems print as `FILE:LINE: field: message`.

`dlq` runs with a service's own settings (its `ELEVATE_*` environment, e.g. inside its
pod): `redrive` re-publishes that service's dead letters through its outbox (docs/runbook.md).
Reading the DLQ takes the admin principal's Kafka credentials (docs/security.md).

`healthcheck` asks this container's own service (ELEVATE_HTTP_PORT on loopback) for its
liveness probe: the image's HEALTHCHECK, where no curl is installed.

`topics create` creates Elevate's topics (ELEVATE_TOPIC_PREFIX, ELEVATE_TOPIC_RETENTION_DAYS)
as the admin principal — services may not create topics. It reads only the Kafka settings.

`migrate` brings one service's database (ELEVATE_DATABASE_URL) to its newest schema, as the
service does at start: the Helm chart's pre-install/pre-upgrade hook, so a new release's
pods find their schema ready. It reads only the database settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from elevate_core import dlq
from elevate_core.directory.models import Account, OrgUnit, User
from elevate_core.errors import ConfigurationError, ElevateError
from elevate_core.kafka.acls import SERVICES
from elevate_core.policy import (
    PolicyError,
    check_policy,
    explain,
    load_policy,
)
from elevate_core.policy.loader import GroupMembers, read_policy_bytes
from elevate_core.policy.resolve import offline_user_warnings
from elevate_core.settings import DatabaseSettings, KafkaSettings, Settings, load_settings

Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _group_members(values: Sequence[str]) -> GroupMembers:
    members: dict[str, list[str]] = {}
    for value in values:
        group, sep, users = value.partition("=")
        if not sep or not group.strip():
            raise argparse.ArgumentTypeError(f"--group-members {value!r}: use GROUP=user1,user2")
        members.setdefault(group.strip(), []).extend(_csv(users))
    return members


def _check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        members = _group_members(args.group_members) if args.group_members else None
    except argparse.ArgumentTypeError as exc:
        print(f"elevate: {exc}", file=err)
        return 2
    status = 0
    for path in args.files:
        try:
            data = read_policy_bytes(path)
        except PolicyError as exc:
            print(str(exc), file=err)
            status = 1
            continue
        result = check_policy(data, source=path, group_members=members)
        for issue in (*result.errors, *result.warnings):
            print(str(issue), file=err)
        if result.policy is None:
            print(f"{path}: INVALID ({len(result.errors)} error(s))", file=err)
            status = 1
            continue
        if args.strict and result.warnings:
            print(f"{path}: INVALID ({len(result.warnings)} warning(s) with --strict)", file=err)
            status = 1
            continue
        # Not counted for --strict: naming users is fine, only offline it cannot be checked.
        for issue in offline_user_warnings(result.policy):
            print(str(issue), file=err)
        doc = result.policy.document
        print(
            f"{path}: OK (version {result.version}: {len(doc.eligibility)} eligibility "
            f"rule(s), {len(doc.approval_rules)} approval rule(s), "
            f"{len(doc.standing_assignments)} standing assignment(s), "
            f"{len(result.warnings)} warning(s))",
            file=out,
        )
    return status


def _account(args: argparse.Namespace) -> Account:
    value: str = args.account.strip()
    if re.fullmatch(r"\d{12}", value):
        account_id, name = value, args.account_name or value
    else:
        account_id, name = args.account_id or "id unknown", value
    names = [part for part in (args.ou_path or "").strip("/").split("/") if part]
    ids = _csv(args.ou_ids or "")
    if ids and len(ids) != len(names):
        raise argparse.ArgumentTypeError("--ou-ids needs one id per --ou-path element")
    path = tuple(
        OrgUnit(id=ids[i] if ids else f"(ou {i})", name=part) for i, part in enumerate(names)
    )
    return Account(id=account_id, name=name, ou_path=path, is_management=args.management)


def _explain(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        print(str(exc), file=err)
        return 1
    try:
        account = _account(args)
    except argparse.ArgumentTypeError as exc:
        print(f"elevate: {exc}", file=err)
        return 2
    user = User(
        user_id=args.user_id or f"(id of {args.user})",
        user_name=args.user,
        groups=frozenset(_csv(args.groups or "")),
    )
    result = explain(policy, user, account, args.permission_set, break_glass=args.break_glass)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2), file=out)
    else:
        print(result.render(), file=out)
    return 0 if result.eligible else 1


def _dlq(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    overrides = {"service_name": args.service} if args.service else {}
    try:
        settings = load_settings(Settings, **overrides)
    except ConfigurationError as exc:
        print(f"elevate: invalid setting {exc}", file=err)
        return 2
    selection = dlq.Selection(
        from_offset=args.from_offset, to_offset=args.to_offset, types=tuple(args.type)
    )
    if args.dlq_command == "list":
        return asyncio.run(dlq.print_dead_letters(settings, selection, out))
    return asyncio.run(dlq.redrive_command(settings, selection, dry_run=args.dry_run, out=out))


def _topics(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from aiokafka.errors import KafkaError

    from elevate_core.kafka.admin import ensure_topics

    try:
        settings = load_settings(KafkaSettings)
        created = asyncio.run(
            ensure_topics(
                settings.kafka,
                prefix=settings.topic_prefix,
                retention_days=settings.topic_retention_days,
                replication_factor=args.replication_factor,
                partitions=args.partitions,
            )
        )
    except ConfigurationError as exc:
        print(f"elevate: invalid setting {exc}", file=err)
        return 2
    except (ElevateError, KafkaError) as exc:
        print(f"elevate: {type(exc).__name__}: {exc}", file=err)
        return 1
    print(f"{len(created)} topics created: {', '.join(created) or '(all present)'}", file=out)
    return 0


def _migrate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import importlib

    from sqlalchemy.exc import SQLAlchemyError

    from elevate_core.db import Database
    from elevate_core.migrate import upgrade

    try:
        settings = load_settings(DatabaseSettings, service_name=args.service)
    except ConfigurationError as exc:
        print(f"elevate: invalid setting {exc}", file=err)
        return 2
    # The service's own package holds its revisions (next to its main module).
    package = importlib.import_module("elevate_" + args.service.replace("-", "_"))
    versions = Path(next(iter(package.__path__))) / "migrations"

    async def run() -> None:
        db = Database(settings.resolved_database_url())
        try:
            await upgrade(db, versions)
        finally:
            await db.dispose()

    try:
        asyncio.run(run())
    except (SQLAlchemyError, OSError) as exc:
        print(f"elevate: migrating {args.service} failed: {type(exc).__name__}: {exc}", file=err)
        return 1
    print(f"{args.service}: database schema up to date", file=out)
    return 0


def _healthcheck(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import os
    import urllib.error
    import urllib.request

    port = os.environ.get("ELEVATE_HTTP_PORT", str(Settings.model_fields["http_port"].default))
    url = f"http://127.0.0.1:{port}{args.path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            print(f"{url}: {response.status}", file=out)
            return 0
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"elevate: {url}: {exc}", file=err)
        return 1


def _help(parser: argparse.ArgumentParser) -> Handler:
    def show(_: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        parser.print_help(file=err)
        return 2

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elevate", description="Elevate: temporary, approved, audited AWS access."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    policy = commands.add_parser("policy", help="check and explain policy files (offline)")
    policy_commands = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    policy.set_defaults(handler=_help(policy))

    check = policy_commands.add_parser(
        "check", help="validate policy files; exit 1 if any is invalid"
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")
    check.add_argument(
        "--group-members",
        action="append",
        default=[],
        metavar="GROUP=USER,USER",
        help="group membership (repeatable), to warn about N-of-M rules that cannot be met",
    )
    check.set_defaults(handler=_check)

    exp = policy_commands.add_parser(
        "explain", help="may this user request this permission set on this account, and why"
    )
    exp.add_argument("file", metavar="FILE")
    exp.add_argument("--user", required=True, help="Identity Store user name")
    exp.add_argument("--user-id", help="Identity Store user id (for rules naming user ids)")
    exp.add_argument("--groups", default="", help="the user's groups, comma-separated")
    exp.add_argument("--account", required=True, help="account id (12 digits) or name")
    exp.add_argument("--account-name", help="the account's name, when --account is an id")
    exp.add_argument("--account-id", help="the account's id, when --account is a name")
    exp.add_argument("--ou-path", default="", help="the account's OU path, e.g. Workloads/Prod")
    exp.add_argument("--ou-ids", help="the OU ids along --ou-path, comma-separated")
    exp.add_argument("--management", action="store_true", help="it is the management account")
    exp.add_argument("--permission-set", required=True, help="permission set name")
    exp.add_argument("--break-glass", action="store_true", help="evaluate a break-glass request")
    exp.add_argument("--json", action="store_true", help="print the explanation as JSON")
    exp.set_defaults(handler=_explain)

    _add_dlq_commands(commands)
    _add_topics_commands(commands)
    _add_migrate_command(commands)
    health = commands.add_parser("healthcheck", help="probe this container's own service")
    health.add_argument("--path", default="/healthz", help="(default /healthz)")
    health.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    health.set_defaults(handler=_healthcheck)
    return parser


def _add_dlq_commands(commands: Any) -> None:
    dlq = commands.add_parser("dlq", help="list and re-drive dead letters (runbook)")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="SUBCOMMAND")
    dlq.set_defaults(handler=_help(dlq))
    for name, text in (
        ("list", "show dead letters: offset, type, origin, consumer, error"),
        ("redrive", "re-publish this service's dead letters through its outbox (idempotent)"),
    ):
        cmd = dlq_commands.add_parser(name, help=text)
        cmd.add_argument("--service", help="the service whose settings and outbox to use")
        cmd.add_argument("--from-offset", type=int, default=0, help="first DLQ offset")
        cmd.add_argument("--to-offset", type=int, default=None, help="stop before this offset")
        cmd.add_argument(
            "--type", action="append", default=[], help="only this ce_type (repeatable)"
        )
        if name == "redrive":
            cmd.add_argument("--dry-run", action="store_true", help="say what would be done")
        cmd.set_defaults(handler=_dlq)


def _add_topics_commands(commands: Any) -> None:
    topics = commands.add_parser("topics", help="create Elevate's topics (admin principal)")
    topics_commands = topics.add_subparsers(dest="topics_command", metavar="SUBCOMMAND")
    topics.set_defaults(handler=_help(topics))
    create = topics_commands.add_parser("create", help="create the missing catalog topics")
    create.add_argument("--replication-factor", type=int, default=1, help="(default 1)")
    create.add_argument(
        "--partitions", type=int, default=None, help="for every topic (default: the catalog's)"
    )
    create.set_defaults(handler=_topics)


def _add_migrate_command(commands: Any) -> None:
    migrate = commands.add_parser("migrate", help="bring a service's database schema up to date")
    migrate.add_argument("--service", required=True, choices=[str(s) for s in SERVICES])
    migrate.set_defaults(handler=_migrate)


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(file=err or sys.stderr)
        return 2
    return handler(args, out or sys.stdout, err or sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
