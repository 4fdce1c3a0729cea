"""A sender flooding the gateway is throttled: the excess is quarantined, not lost (R-TH-8)."""

from helpgate.config.schema import parse_window
from helpgate.threading.context import Action, Context
from helpgate.threading.directory import Directory

NAME = "throttle"
DESCRIPTION = "quarantine messages beyond the per-sender limit"


def apply(ctx: Context, directory: Directory) -> None:
    limit = ctx.config.threading.throttle_max
    sender = ctx.message.sender_key
    if limit <= 0 or not sender or ctx.replay:
        return
    person = directory.person_by_identity(*ctx.message.sender)
    if person is not None and person.kind == "employee":
        return
    window = parse_window(ctx.config.threading.throttle_window)
    count = directory.messages_from_since(sender, ctx.now - window)
    if count > limit:
        ctx.stop(NAME, Action.QUARANTINED,
                 f"throttled: {count} messages from {sender} within "
                 f"{ctx.config.threading.throttle_window} (limit {limit})")
