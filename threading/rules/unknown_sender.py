"""Who stands for a sender nobody knows (R-TH-3, R-TH-5).

A new ticket from an unknown address gets a new contact when the admin turned
"create contacts" on. A message on an existing ticket from an unknown address (a colleague
in copy, a forwarded reply) is added on behalf of the earliest administrator.
"""

from helpgate.threading.context import Context
from helpgate.threading.directory import Directory

NAME = "unknown_sender"
DESCRIPTION = "create a contact for an unknown sender, or stand in the earliest admin"


def apply(ctx: Context, directory: Directory) -> None:
    if ctx.decision.author is not None:
        return
    sender = ctx.message.sender_key
    if ctx.decision.ticket is None and ctx.config.threading.create_contacts:
        ctx.decision.create_contact = True
        ctx.fire(NAME, f"new contact for {sender}")
        return
    admin = directory.earliest_admin()
    ctx.decision.author = admin
    ctx.decision.stand_in_author = True
    who = admin.email if admin else "the system (no administrator exists)"
    ctx.fire(NAME, f"unknown sender {sender}: comment on behalf of {who}")
