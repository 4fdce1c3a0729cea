"""Bounces (DSN, mailer-daemon) never open tickets; they are recorded against our mail."""

from helpgate.threading.context import Action, Context
from helpgate.threading.directory import Directory

NAME = "bounce"
DESCRIPTION = "ignore delivery status notifications and record them on the outgoing message"


def apply(ctx: Context, directory: Directory) -> None:
    report = ctx.message.delivery_status
    if report is None:
        return
    original = report.original_message_id
    if original:
        ctx.decision.bounced_outbox_id = directory.outbox_id_by_message_id(original)
    status = report.status or "unknown status"
    about = original or "an unknown message"
    known = "" if ctx.decision.bounced_outbox_id else " (not one of ours)"
    ctx.stop(NAME, Action.IGNORED, f"bounce for {about}{known}: {status}")
