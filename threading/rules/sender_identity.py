"""The author is the employee or contact the sender is (R-TH-3): by address on mail, by
their id on a messenger."""

from helpgate.threading.context import Context
from helpgate.threading.directory import Directory

NAME = "sender_identity"
DESCRIPTION = "identify the sender as a known employee or contact"


def apply(ctx: Context, directory: Directory) -> None:
    sender = ctx.message.sender
    if sender is None:
        return
    person = directory.person_by_identity(*sender)
    if person is None:
        return
    ctx.decision.author = person
    if person.kind == "contact":
        ctx.decision.contact = person
        ctx.decision.company_id = person.company_id
    ctx.fire(NAME, f"{person.kind} {person.email or person.name or person.id}")
