"""The `helpgate` command: the admin's and the acceptance checks' way in.

The command names and JSON shapes are a contract (keys may be added, never renamed). Bad
input (unknown ticket, bad status, disallowed transition, bad config) exits non-zero with
one clear line on stderr and changes nothing. Every command brings the database schema up
to date first, so a new user needs no separate setup step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from helpgate.channels.mail.parse import header_part, oversized
from helpgate.config.load import ConfigError, load_config
from helpgate.config.schema import Config

log = logging.getLogger("helpgate.cli")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


LOG_LEVELS = ("debug", "info", "warning", "error")
# The channels with a `helpgate <name> check` (their ChannelKind has a check). Named here
# for the parser only: the registry loads every channel's modules, and every command
# builds the parser. tests/gateway/test_cli_messenger_checks.py keeps it equal to the
# registry's.
CHECKED_CHANNELS = ("telegram", "vk", "sms", "webform")
NONE = "none"  # what a text listing prints when it has nothing to list


def _version() -> str:
    try:
        return f"helpgate {version('helpgate')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "helpgate (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="helpgate", description=(
        "Email and messenger channel gateway for a help desk."))
    parser.add_argument("--config", help="config file (default: $HELPGATE_CONFIG, "
                        "else built-in defaults with an SQLite database in ./helpgate.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway: channels, outbox worker, timers")
    run.add_argument("--timer-interval", type=float, default=30.0, help=argparse.SUPPRESS)
    run.add_argument("--log-level", choices=LOG_LEVELS, default="info", type=str.lower,
                     help="helpgate's own log level (default: info, one line per "
                          "decision; libraries log warnings only)")

    ingest = sub.add_parser("ingest", help="run one raw email (file or -) through the pipeline")
    ingest.add_argument("path", help="an .eml file, or - for standard input")
    ingest.add_argument("--type", dest="ticket_type", help="ticket type for a new ticket")

    ticket = sub.add_parser("ticket", help="show one ticket")
    ticket.add_argument("number", type=int)
    ticket.add_argument("--json", action="store_true", help="print JSON")

    tickets = sub.add_parser("tickets", help="list tickets (a customer's history by email/phone)")
    tickets.add_argument("--json", action="store_true", help="print JSON")
    tickets.add_argument("--status")
    tickets.add_argument("--email")
    tickets.add_argument("--phone")
    tickets.add_argument("--assignee", metavar="EMPLOYEE",
                         help="only the tickets assigned to this employee (email or id)")

    assign = sub.add_parser("assign", help="give a ticket to an employee (or, with --none, "
                            "to nobody)")
    assign.add_argument("number", type=int)
    assign.add_argument("employee", nargs="?", metavar="EMPLOYEE",
                        help="the employee's email or id")
    assign.add_argument("--none", action="store_true", help="unassign the ticket")
    assign.add_argument("--json", action="store_true", help="print JSON")

    status = sub.add_parser("status", help="change a ticket's status")
    status.add_argument("number", type=int)
    status.add_argument("status")
    status.add_argument("--until", help="ISO 8601 time, required by pending-like statuses")

    outbox = sub.add_parser("outbox", help="queued and sent outbound messages")
    outbox.add_argument("--json", action="store_true", help="print JSON")
    osub = outbox.add_subparsers(dest="action", metavar="ACTION")
    oretry = osub.add_parser("retry", help="send a parked or uncertain message again")
    oretry.add_argument("id", type=int)

    mport = sub.add_parser("import", help="bring an existing mailbox's history in "
                           "(idempotent: a second run adds nothing)")
    mport.add_argument("format", choices=["mbox", "maildir"])
    mport.add_argument("path")
    mport.add_argument("--type", dest="ticket_type", help="ticket type for new tickets")
    mport.add_argument("--no-progress", action="store_true", help="no progress bar")

    reply = sub.add_parser("reply", help="add a staff comment to a ticket; a public one "
                           "goes to the customer")
    reply.add_argument("number", type=int)
    reply.add_argument("text", nargs="?", help="the comment, or - for standard input "
                       "(optional with --canned: added below the canned answer)")
    reply.add_argument("--canned", metavar="ID|TITLE",
                       help="a canned answer (helpgate canned list): its text goes first")
    reply.add_argument("--private", action="store_true",
                       help="an internal comment: never sent to the customer")
    reply.add_argument("--as", dest="author", metavar="EMAIL",
                       help="the employee signing it (default: the earliest administrator)")
    reply.add_argument("--via", metavar="CHANNEL",
                       help="the channel to answer on (default: the one the ticket came "
                            "from; see notifications.fallback_order)")

    quarantine = sub.add_parser("quarantine", help="messages that could not be processed")
    qsub = quarantine.add_subparsers(dest="action", required=True, metavar="ACTION")
    qlist = qsub.add_parser("list", help="list quarantined messages")
    qlist.add_argument("--json", action="store_true", help="print JSON")
    qlist.add_argument("--dropped", action="store_true",
                       help="list the dropped messages instead")
    qreplay = qsub.add_parser("replay", help="run a quarantined message through again")
    qreplay.add_argument("id", type=int)
    qshow = qsub.add_parser("show", help="one quarantined message: headers, reason, size")
    qshow.add_argument("id", type=int)
    qshow.add_argument("--json", action="store_true", help="print JSON")
    qdrop = qsub.add_parser("drop", help="give up on a quarantined message: state "
                            "dropped, kept with its raw bytes and the reason")
    qdrop.add_argument("id", type=int)
    qdrop.add_argument("--reason", required=True, help="why it is dropped (kept with it)")

    canned = sub.add_parser("canned", help="canned answers (ready replies), filed by case")
    csub = canned.add_subparsers(dest="action", required=True, metavar="ACTION")
    clist = csub.add_parser("list", help="the canned answers, grouped by case")
    clist.add_argument("--json", action="store_true", help="print JSON")
    clist.add_argument("--case", help="only the answers filed under this case")
    cadd = csub.add_parser("add", help="a new canned answer")
    cadd.add_argument("title", help="its title, unique across all cases")
    cadd.add_argument("text", help="the text sent, or - for standard input")
    cadd.add_argument("--case", help="the case to file it under")
    cshow = csub.add_parser("show", help="one canned answer")
    cshow.add_argument("ref", metavar="ID|TITLE")
    cshow.add_argument("--json", action="store_true", help="print JSON")
    cremove = csub.add_parser("remove", help="delete a canned answer (replies made with it "
                              "keep their text)")
    cremove.add_argument("ref", metavar="ID|TITLE")

    staff = sub.add_parser("staff", help="staff members' reply addresses")
    ssub = staff.add_subparsers(dest="action", required=True, metavar="ACTION")
    srevoke = ssub.add_parser("revoke", help="revoke an employee's reply addresses (they "
                              "left, or one leaked): mail through them no longer counts")
    srevoke.add_argument("email", help="the employee's email address")
    srevoke.add_argument("--ticket", type=int, help="only this ticket's reply address")

    apitoken = sub.add_parser("api-token", help="tokens of the staff HTTP API (not the "
                              "staff reply addresses of `helpgate staff`)")
    tsub = apitoken.add_subparsers(dest="action", required=True, metavar="ACTION")
    tissue = tsub.add_parser("issue", help="a new token for an employee; printed once, "
                             "kept hashed")
    tissue.add_argument("email", help="the employee the token acts as")
    tissue.add_argument("--name", required=True, help="what or who uses it (a label)")
    tlist = tsub.add_parser("list", help="the tokens (never their values)")
    tlist.add_argument("--json", action="store_true", help="print JSON")
    trevoke = tsub.add_parser("revoke", help="end a token: requests with it are refused")
    trevoke.add_argument("id", type=int, help="the token's id (helpgate api-token list)")

    attachment = sub.add_parser("attachment", help="stored attachments")
    asub = attachment.add_subparsers(dest="action", required=True, metavar="ACTION")
    aget = asub.add_parser("get", help="write a stored attachment to a file (a safe name "
                           "in the current folder unless -o)")
    aget.add_argument("id", type=int, help="the attachment's id (helpgate ticket N --json)")
    aget.add_argument("-o", "--output", metavar="PATH",
                      help="the file or folder to write to, or - for standard output")

    for channel in CHECKED_CHANNELS:
        entry = sub.add_parser(channel, help=f"the {channel} channel")
        esub = entry.add_subparsers(dest="action", required=True, metavar="ACTION")
        echeck = esub.add_parser("check", help=f"check the {channel} set-up against the "
                                 "service: credentials, mode, what it will deliver, the "
                                 "balance (exit 1 when something must be fixed)")
        echeck.add_argument("--json", action="store_true", help="print JSON")

    oauth = sub.add_parser("oauth", help="OAuth2 grants of mailboxes and relays "
                           "(Microsoft 365, Google, Yandex)")
    osub2 = oauth.add_subparsers(dest="action", required=True, metavar="ACTION")
    ologin = osub2.add_parser("login", help="sign a mailbox's grant in: a device code, or "
                              "a browser redirected to this machine; stores the refresh "
                              "token encrypted (HELPGATE_SECRET_KEY)")
    ologin.add_argument("grant", metavar="MAILBOX",
                        help="the grant's name (oauth2.grant, default the mailbox's "
                             "username) or the mailbox (user@host/folder)")
    ologin.add_argument("--wait", type=float, default=900.0,
                        help="seconds to wait for the sign-in (default: 900)")
    olist = osub2.add_parser("list", help="the configured grants and their state")
    olist.add_argument("--json", action="store_true", help="print JSON")
    osub2.add_parser("key", help="print a new key for HELPGATE_SECRET_KEY")

    doctor = sub.add_parser("doctor", help="the state of each configured mailbox and relay, "
                            "with the command that fixes it (exit 1 when one needs it)")
    doctor.add_argument("--json", action="store_true", help="print JSON")

    db = sub.add_parser("db", help="database schema")
    dbsub = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    dbsub.add_parser("upgrade", help="apply schema migrations")

    directory = sub.add_parser("directory", help="companies, contacts and employees")
    dsub = directory.add_subparsers(dest="action", required=True, metavar="ACTION")
    dimport = dsub.add_parser("import", help="import a JSON or TOML directory file")
    dimport.add_argument("file")
    dlist = dsub.add_parser("list", help="list the directory")
    dlist.add_argument("--json", action="store_true", help="print JSON")
    dadd = dsub.add_parser("add", help="add or update one entry")
    dadd.add_argument("kind", choices=["company", "contact", "employee"])
    dadd.add_argument("--name")
    dadd.add_argument("--email")
    dadd.add_argument("--phone")
    dadd.add_argument("--domain", action="append", default=[], help="company mail domain")
    dadd.add_argument("--company", help="a contact's company name")
    dadd.add_argument("--role", choices=["admin", "agent"], default="agent")
    dremove = dsub.add_parser("remove", help="delete one entry that no ticket or comment "
                              "points at (else refused, nothing changed)")
    dremove.add_argument("kind", choices=["company", "contact", "employee"])
    dremove.add_argument("id", type=int, help="the entry's id (helpgate directory list "
                         "--json)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line. `reply`'s text is optional (with --canned), and argparse
    gives an optional positional its empty value at once when an option comes between
    (`reply 5 --private TEXT`): such a text comes back as an extra and is taken here."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if (extra and getattr(args, "command", None) == "reply" and args.text is None
            and len(extra) == 1 and (extra[0] == "-" or not extra[0].startswith("-"))):
        args.text, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "run" and not args.verbose:
        # The running gateway logs one line per decision; libraries only their trouble.
        logging.getLogger("helpgate").setLevel(args.log_level.upper())
    try:
        _check_numbers(args)
        config = load_config(args.config)
        if args.command == "oauth" and args.action == "key":
            from helpgate.ticketstore.oauth import new_key
            print(new_key())
            return 0
        if args.command in CHECKED_CHANNELS:
            # A set-up check needs no database (a wrong database URL is reported elsewhere).
            return asyncio.run(_cmd_check(args, config))
        return asyncio.run(_dispatch(args, config))
    except (ConfigError, CliError) as exc:
        print(f"helpgate: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# The largest number the store can hold (64-bit signed): anything above names nothing.
MAX_NUMBER = 2**63 - 1
_ID_OF = {"outbox": "outbox message", "quarantine": "quarantined message",
          "api-token": "API token"}


def _check_numbers(args: argparse.Namespace) -> None:
    """A ticket number or id no row can have is "not found", not a database error."""
    for name in ("number", "ticket", "id"):
        value = getattr(args, name, None)
        if isinstance(value, int) and not 1 <= value <= MAX_NUMBER:
            what = "ticket" if name != "id" else _ID_OF.get(
                args.command, getattr(args, "kind", None) or "record")
            raise CliError(f"no {what} {value}")


async def _dispatch(args: argparse.Namespace, config: Config) -> int:
    from helpgate.ticketstore.repository import Store

    try:
        store = Store(config.database.url, echo=config.database.echo)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        try:
            await store.ensure_schema()
        except OSError as exc:
            raise CliError(f"cannot open database {config.database.url}: {exc}") from None
        handler = COMMANDS[args.command]
        return await handler(args, config, store)
    finally:
        await store.close()


def _print(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def _now() -> datetime:
    return datetime.now(timezone.utc)


async def _cmd_check(args, config: Config) -> int:
    """`helpgate <channel> check`: one line per finding (text) or the findings as JSON;
    exit 1 when one of them must be fixed."""
    from helpgate.gateway.channels import CHANNELS
    findings = await CHANNELS[args.command].kind.check(config)
    ok = all(finding.ok for finding in findings)
    if args.json:
        _print({"ok": ok, "checks": [finding.as_dict() for finding in findings]})
    else:
        for finding in findings:
            mark = "FAIL" if not finding.ok else "note" if finding.fix else "ok"
            # One line each, the fix on it: what an admin pastes when asking for help.
            print(f"{mark:<4}  {finding.name}: {finding.detail}"
                  + (f" — {'fix' if not finding.ok else 'advice'}: {finding.fix}"
                     if finding.fix else ""))
        print(f"{args.command}: " + ("all is well" if ok else "something must be fixed"))
    return 0 if ok else 1


async def _cmd_run(args, config: Config, store) -> int:
    from helpgate.channels.base import ChannelStartError
    from helpgate.gateway.run import serve
    try:
        await serve(config, store, timer_interval=args.timer_interval)
    except ChannelStartError as exc:
        raise CliError(str(exc)) from None
    return 0


async def _cmd_ingest(args, config: Config, store) -> int:
    from helpgate.gateway.pipeline import Pipeline
    if args.ticket_type and args.ticket_type not in config.tickets.types:
        raise CliError(f"unknown ticket type {args.ticket_type!r}; known: "
                       f"{', '.join(config.tickets.types)}")
    limit = config.mail.max_message_size
    raw, size = await asyncio.to_thread(_read_input, args.path, limit)
    pipeline = Pipeline(config, store)
    if size > limit:
        # As the IMAP reader does: over the limit, the header is kept and quarantined.
        message = oversized(raw, size, limit, pipeline.clock())
        result = await pipeline.ingest(message, args.ticket_type)
    else:
        result = await pipeline.ingest_email(raw, args.ticket_type)
    print(json.dumps(result.as_dict(), ensure_ascii=False))
    return 0


def _read_input(path: str, limit: int) -> tuple[bytes, int]:
    if path == "-":
        return _read_limited(sys.stdin.buffer, limit)
    try:
        with Path(path).open("rb") as source:
            return _read_limited(source, limit)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def _read_limited(source, limit: int) -> tuple[bytes, int]:
    """The whole input when within `limit`; else its header part and the full size."""
    data = source.read(limit + 1)
    if len(data) <= limit:
        return data, len(data)
    size = len(data)
    while chunk := source.read(1 << 20):
        size += len(chunk)
    return header_part(data), size


async def _cmd_ticket(args, config: Config, store) -> int:
    from helpgate.ticketstore.queries import ticket_detail
    from helpgate.ticketstore.repository import ticket_by_number

    def read(session):
        ticket = ticket_by_number(session, args.number)
        if ticket is None:
            raise CliError(f"no ticket {args.number}")
        return ticket_detail(session, config, ticket, _now())

    data = await store.run(read)
    if args.json:
        _print(data)
    else:
        print(_ticket_text(data))
    return 0


def _ticket_text(data: dict) -> str:
    contact = data["contact"] or {}
    lines = [f"#{data['number']} {data['subject']}",
             f"status: {data['status_name']} ({data['status']})  type: {data['type']}  "
             f"channel: {data['channel']}",
             f"contact: {contact.get('name') or ''} <{contact.get('email') or ''}>  "
             f"company: {(data['company'] or {}).get('name') or '-'}",
             "assignee: " + (f"{data['assignee']['name']} <{data['assignee']['email'] or ''}>"
                             if data.get("assignee") else "-")]
    if data["linked_tickets"]:
        lines.append("linked: " + ", ".join(f"#{n}" for n in data["linked_tickets"]))
    if data.get("rating"):
        lines.append(f"rated by the customer: {data['rating']} of 5")
    for comment in data["comments"]:
        author = comment["author"]
        visibility = "public" if comment["public"] else "private"
        lines += ["", f"--- comment {comment['id']} by {author['kind']} "
                      f"{author['email'] or ''} ({visibility}, {comment['channel']})",
                  comment["text"]]
        if comment.get("unverified"):
            lines.append(f"[unverified, relayed to no one: {comment['unverified']}]")
        lines += [f"[attachment {a['filename']}, {a['size']} bytes"
                  f"{'' if a['stored'] else ', not stored'}]" for a in comment["attachments"]]
    return "\n".join(lines)


async def _cmd_tickets(args, config: Config, store) -> int:
    from helpgate.ticketstore.assignments import AssignmentError, find_employee
    from helpgate.ticketstore.queries import ticket_list
    known = config.statuses.states_by_id()
    if args.status and args.status not in known:
        raise CliError(f"unknown status {args.status!r}; known: {', '.join(known)}")

    def read(session):
        assignee = None
        if args.assignee is not None:
            try:
                assignee = find_employee(session, args.assignee).id
            except AssignmentError as exc:
                raise CliError(str(exc)) from None
        return ticket_list(session, config, args.status, args.email, args.phone, assignee)

    rows = await store.run(read)
    if args.json:
        _print(rows)
    else:
        _lines(f"#{row['number']}\t{row['status']}\t{row['subject']}" for row in rows)
    return 0


def _lines(lines) -> None:
    """A text listing, one line per entry; "none" rather than silence when empty."""
    printed = False
    for line in lines:
        print(line)
        printed = True
    if not printed:
        print(NONE)


async def _cmd_status(args, config: Config, store) -> int:
    from helpgate.gateway.status_service import status_service
    from helpgate.ticketstore.queries import ticket_summary
    from helpgate.ticketstore.repository import ticket_by_number
    from helpgate.ticketstore.statuses import StatusError

    until = _parse_time(args.until) if args.until else None
    now = _now()
    service = status_service(config)

    def change(session):
        ticket = ticket_by_number(session, args.number, lock=True)
        if ticket is None:
            raise CliError(f"no ticket {args.number}")
        try:
            service.request(session, ticket, args.status, now,
                            "changed by an operator (CLI)", until)
        except StatusError as exc:
            raise CliError(str(exc)) from None
        return ticket_summary(session, config, ticket)

    _print(await store.run(change))
    return 0


async def _cmd_assign(args, config: Config, store) -> int:
    from helpgate.gateway.status_service import assignment_service
    from helpgate.ticketstore.assignments import AssignmentError, find_employee
    from helpgate.ticketstore.queries import ticket_summary
    from helpgate.ticketstore.repository import ticket_by_number

    if args.none == (args.employee is not None):
        raise CliError("name the employee (email or id), or --none to unassign")
    now = _now()
    service = assignment_service(config)

    def change(session):
        ticket = ticket_by_number(session, args.number, lock=True)
        if ticket is None:
            raise CliError(f"no ticket {args.number}")
        try:
            employee = find_employee(session, args.employee) if not args.none else None
        except AssignmentError as exc:
            raise CliError(str(exc)) from None
        done = service.assign(session, ticket, employee, now,
                              "assigned by an operator (CLI)" if employee
                              else "unassigned by an operator (CLI)")
        return {**ticket_summary(session, config, ticket), "changed": done is not None}

    data = await store.run(change)
    if args.json:
        _print(data)
    else:
        who = data["assignee"]
        print(f"#{data['number']}: " + (f"assigned to {who['name']} <{who['email']}>"
                                       if who else "unassigned")
              + ("" if data["changed"] else " (already)"))
    return 0


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--until {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # a local time as the operator meant it
    return parsed.astimezone(timezone.utc)


async def _cmd_outbox(args, config: Config, store) -> int:
    from helpgate.ticketstore import outbox
    from helpgate.ticketstore.queries import outbox_list
    if args.action == "retry":
        try:
            await store.run(outbox.retry, args.id, _now())
        except outbox.RetryError as exc:
            raise CliError(str(exc)) from None
        _print({"retry": args.id, "state": "queued"})
        return 0
    rows = await store.run(outbox_list)
    if args.json:
        _print(rows)
    else:
        # The last error says why a message waits or was parked (a relay's answer).
        _lines(f"{row['id']}\t{row['state']}\t{row['channel']}\t{row['to']}\t"
               f"{row['subject']}" + (f"\terror: {row['last_error']}"
                                      if row["last_error"] else "") for row in rows)
    return 0


async def _cmd_quarantine(args, config: Config, store) -> int:
    from helpgate.gateway.pipeline import Pipeline, ReplayError
    from helpgate.ticketstore import quarantine
    from helpgate.ticketstore.queries import quarantine_list
    if args.action == "list":
        rows = await store.run(quarantine.dropped_list if args.dropped else quarantine_list)
        if args.json:
            _print(rows)
        else:
            _lines(f"{row['id']}\t{row['received_at']}\t{row['sender'] or '-'}\t"
                   f"{row['reason']}" + (f"\tdropped: {row['dropped']['reason']}"
                                         if row.get("dropped") else "") for row in rows)
        return 0
    if args.action in ("show", "drop"):
        try:
            if args.action == "show":
                data = await store.run(quarantine.detail, args.id)
            else:
                data = await store.run(quarantine.drop, args.id, args.reason, _now())
        except quarantine.QuarantineError as exc:
            raise CliError(str(exc)) from None
        if args.action == "drop" or args.json:
            _print(data)
        else:
            print(_quarantined_text(data))
        return 0
    try:
        result = await Pipeline(config, store).replay(args.id)
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps(result.as_dict(), ensure_ascii=False))
    return 0


def _quarantined_text(data: dict) -> str:
    lines = [f"message {data['id']}: {data['state']} ({data['channel']}, {data['size']} "
             f"bytes, received {data['received_at']})",
             f"reason: {data['reason']}", f"sender: {data['sender'] or '-'}"]
    if data["dropped"]:
        lines.append(f"dropped: {data['dropped']['reason']} ({data['dropped']['at']})")
    lines.append("headers:")
    lines += [f"  {name}: {value}" for name, value in data["headers"]] or ["  none"]
    return "\n".join(lines)


async def _cmd_import(args, config: Config, store) -> int:
    from helpgate.gateway.mailbox_import import MailboxError, import_mailbox
    if args.ticket_type and args.ticket_type not in config.tickets.types:
        raise CliError(f"unknown ticket type {args.ticket_type!r}; known: "
                       f"{', '.join(config.tickets.types)}")
    try:
        summary = await import_mailbox(config, store, args.format, args.path,
                                       args.ticket_type, progress=not args.no_progress)
    except MailboxError as exc:
        raise CliError(str(exc)) from None
    _print(summary)
    return 0


async def _cmd_reply(args, config: Config, store) -> int:
    from helpgate.gateway.channels import sending_channels
    from helpgate.gateway.replies import ReplyError, staff_reply
    known = sending_channels()
    if args.via is not None and args.via not in known:
        raise CliError(f"--via {args.via}: no such channel; known: {', '.join(known)}")
    if args.text is None and args.canned is None:
        raise CliError("give the reply's text (or - for standard input), or --canned "
                       "ID|TITLE")
    text = sys.stdin.read() if args.text == "-" else (args.text or "")
    try:
        result = await store.run(staff_reply, config, args.number, text, not args.private,
                                 args.author, "cli", _now(), args.via, (), args.canned)
    except ReplyError as exc:
        raise CliError(str(exc)) from None
    _print(result)
    return 0


async def _cmd_canned(args, config: Config, store) -> int:
    """`helpgate canned`: the same rows and shapes as the staff API's /canned."""
    from helpgate.ticketstore import canned
    try:
        if args.action == "add":
            text = sys.stdin.read() if args.text == "-" else args.text
            if not args.title.strip() or not text.strip():
                raise CliError("a canned answer needs a title and a text")
            _print(await store.run(canned.create, args.title, text.strip(), _now(),
                                   args.case))
        elif args.action == "show":
            row = await store.run(canned.detail, args.ref)
            if args.json:
                _print(row)
            else:
                print(f"{row['id']}\t{row['title']}\t{row['case'] or '-'}\n{row['text']}")
        elif args.action == "remove":
            _print({"deleted": await store.run(canned.delete, args.ref)})
        else:
            rows = await store.run(canned.canned_list, args.case)
            if args.json:
                _print({"canned": rows, "cases": canned.cases(rows)})
            else:
                _lines(f"{group['case'] or '(no case)'}\t{answer['id']}\t{answer['title']}"
                       for group in canned.cases(rows) for answer in group["answers"])
    except canned.CannedError as exc:
        raise CliError(str(exc)) from None
    return 0


async def _cmd_staff(args, config: Config, store) -> int:
    from helpgate.ticketstore.staff_tokens import TokenError, revoke
    try:
        count = await store.run(revoke, args.email, _now(), args.ticket)
    except TokenError as exc:
        raise CliError(str(exc)) from None
    _print({"employee": args.email.strip().lower(), "ticket": args.ticket, "revoked": count})
    return 0


async def _cmd_api_token(args, config: Config, store) -> int:
    from helpgate.ticketstore import api_tokens
    try:
        if args.action == "issue":
            _print(await store.run(api_tokens.issue, args.email, args.name, _now()))
        elif args.action == "revoke":
            _print(await store.run(api_tokens.revoke, args.id, _now()))
        else:
            rows = await store.run(api_tokens.token_list)
            if args.json:
                _print(rows)
            else:
                _lines(f"{row['id']}\t{row['prefix']}…\t{row['employee']}\t{row['name']}\t"
                       + ("active" if row["active"] else f"revoked {row['revoked_at']}")
                       for row in rows)
    except api_tokens.ApiTokenError as exc:
        raise CliError(str(exc)) from None
    return 0


async def _cmd_attachment(args, config: Config, store) -> int:
    from helpgate.outbound.attachments import safe_filename
    from helpgate.ticketstore.queries import attachment_content
    found = await store.run(attachment_content, args.id)
    if found is None:
        raise CliError(f"no attachment {args.id}")
    filename, data = found
    if data is None:
        raise CliError(f"attachment {args.id} ({filename!r}) was not stored: it was larger "
                       "than mail.max_attachment_size")
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    target, exclusive = _attachment_path(args.output,
                                         safe_filename(filename, f"attachment-{args.id}"))
    try:
        await asyncio.to_thread(_write_file, target, data, exclusive)
    except FileExistsError:
        raise CliError(f"{target} exists; name another file with -o PATH") from None
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror}") from None
    _print({"attachment": args.id, "filename": filename, "path": str(target),
            "size": len(data)})
    return 0


def _write_file(target: Path, data: bytes, exclusive: bool) -> None:
    # The stored name never overwrites anything; a path the admin named may.
    with open(target, "xb" if exclusive else "wb") as file:
        file.write(data)


def _attachment_path(output: str | None, safe_name: str) -> tuple[Path, bool]:
    """Where to write, and whether the file must be new (a name we chose)."""
    if output is None:
        return Path.cwd() / safe_name, True
    if Path(output).is_dir():
        return Path(output) / safe_name, True
    return Path(output), False


async def _cmd_db(args, config: Config, store) -> int:
    from helpgate.ticketstore.migrations import HEAD
    # ensure_schema has run before every command; this one reports the outcome.
    print(f"database schema is at revision {HEAD}")
    return 0


async def _cmd_directory(args, config: Config, store) -> int:
    from helpgate.ticketstore import people
    from helpgate.ticketstore.queries import directory_list
    now = _now()
    try:
        if args.action == "import":
            data = people.read_directory_file(args.file)
            counts = await store.run(people.import_directory, data, now)
            _print({"imported": counts})
        elif args.action == "add":
            await store.run(_add_entry, args, now)
            _print({"added": args.kind, "name": args.name, "email": args.email})
        elif args.action == "remove":
            _print(await store.run(people.delete_entry, args.kind, args.id))
        else:
            rows = await store.run(directory_list)
            if args.json:
                _print(rows)
            else:
                _lines(f"{kind[:-1]}\t{entry['name'] or ''}\t{entry.get('email') or ''}"
                       for kind, entries in rows.items() for entry in entries)
    except people.DirectoryError as exc:
        raise CliError(str(exc)) from None
    return 0


def _add_entry(session, args, now) -> None:
    from pydantic import ValidationError

    from helpgate.ticketstore import people
    fields = {"name": args.name, "email": args.email, "phone": args.phone}
    try:
        if args.kind == "company":
            people.upsert_company(session, people.CompanyEntry(
                **fields, domains=args.domain), now)
        elif args.kind == "contact":
            people.upsert_contact(session, people.ContactEntry(
                **fields, company=args.company), now)
        else:
            people.upsert_employee(session, people.EmployeeEntry(
                **fields, role=args.role), now)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or args.kind
        raise people.DirectoryError(f"{args.kind} {field}: "
                                    f"{error['msg'].removeprefix('Value error, ')}") from None


async def _cmd_oauth(args, config: Config, store) -> int:
    from helpgate.gateway.oauth import LoginError, configured_grants, login
    from helpgate.ticketstore import oauth as grants
    configured = configured_grants(config)
    if args.action == "list":
        states = await store.run(grants.grant_states)
        rows = [{"grant": name, "provider": use.endpoints.provider, "users": list(use.users),
                 "state": (states.get(name) or {}).get("state", "never_logged_in"),
                 "detail": (states.get(name) or {}).get("detail"),
                 "access_expires_at": (states.get(name) or {}).get("access_expires_at"),
                 "rotations": (states.get(name) or {}).get("rotations", 0)}
                for name, use in configured.items()]
        if args.json:
            _print(rows)
        else:
            _lines(f"{row['grant']}\t{row['provider']}\t{row['state']}\t"
                   f"{', '.join(row['users'])}" for row in rows)
        return 0
    name = _grant_named(config, args.grant, configured)
    try:
        box = grants.secret_box()
    except grants.SecretKeyError as exc:
        raise CliError(str(exc)) from None

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        tokens = await login(store, configured[name], out, box, wait=args.wait)
    except LoginError as exc:
        raise CliError(f"oauth login {name}: {exc}") from None
    _print({"grant": name, "provider": configured[name].endpoints.provider, "state": "ok",
            "access_expires_at": tokens.expires_at.isoformat()})
    return 0


def _grant_named(config: Config, given: str, configured: dict) -> str:
    if given in configured:
        return given
    for mailbox in config.mail.imap:
        if mailbox.auth == "oauth2" and given == mailbox.name:
            return mailbox.grant_name
    known = ", ".join(configured) or "none (no mailbox or relay has auth = \"oauth2\")"
    raise CliError(f"no OAuth2 grant {given!r} in the configuration; known: {known}")


async def _cmd_doctor(args, config: Config, store) -> int:
    from helpgate.gateway.doctor import diagnose
    findings = await diagnose(config, store)
    ok = all(finding.ok for finding in findings)
    if args.json:
        _print({"ok": ok, "checks": [finding.as_dict() for finding in findings]})
    else:
        _lines(f"{'ok' if finding.ok else 'FAIL':<4}  {finding.name}: {finding.detail}"
               + (f" — fix: {finding.fix}" if finding.fix else "") for finding in findings)
        print("doctor: " + ("all is well" if ok else "something must be fixed"))
    return 0 if ok else 1


COMMANDS = {
    "run": _cmd_run, "ingest": _cmd_ingest, "ticket": _cmd_ticket, "tickets": _cmd_tickets,
    "status": _cmd_status, "assign": _cmd_assign, "outbox": _cmd_outbox,
    "quarantine": _cmd_quarantine,
    "db": _cmd_db, "directory": _cmd_directory, "reply": _cmd_reply,
    "import": _cmd_import, "staff": _cmd_staff, "attachment": _cmd_attachment,
    "oauth": _cmd_oauth, "doctor": _cmd_doctor, "api-token": _cmd_api_token,
    "canned": _cmd_canned,
}

if __name__ == "__main__":
    sys.exit(main())
