"""Only an authenticated employee speaks as staff (issue #15; R-GW-1, R-GW-2).

A From header proves nothing: anyone can write an employee's address and a ticket's
marker. An employee's mail on a ticket counts as staff's only when it came through that
employee's reply address for that ticket (the token in `support+<token>@…` that staff
notifications carry in Reply-To), or when a receiving server the admin trusts reports a
DKIM signature aligned with, or a DMARC pass for, the employee's domain. Otherwise the
decision says why, and the pipeline keeps the mail as an unverified private note.
"""

from helpgate.threading.authresults import (
    HEADER,
    envelope_recipients,
    header_block,
    proof_for,
    verified,
)
from helpgate.threading.context import Context, Person, TicketView
from helpgate.threading.directory import Directory
from helpgate.threading.markers import reply_tokens

NAME = "staff_auth"
DESCRIPTION = "an employee's mail counts as staff's only through a reply token or DKIM/DMARC"


def apply(ctx: Context, directory: Directory) -> None:
    author, ticket = ctx.decision.author, ctx.decision.ticket
    if author is None or author.kind != "employee" or ticket is None \
            or ctx.decision.stand_in_author:
        return
    if ctx.history:
        ctx.fire(NAME, f"{author.email}: mailbox history imported by an admin")
        return
    headers = header_block(ctx.message.raw)
    proof, problem = _token(ctx, directory, author, ticket, headers)
    if proof is None:
        domain = (author.email or "").rpartition("@")[2]
        found = verified([str(v) for v in headers.get_all(HEADER) or []],
                         ctx.config.mail.authserv_ids)
        proof = proof_for(found, domain) if domain else None
    if proof is not None:
        ctx.fire(NAME, f"{author.email} authenticated by {proof}")
        return
    why = problem or (f"it did not come through your reply address for ticket "
                      f"{ticket.number}, and no trusted mail server reported DKIM or DMARC "
                      f"passing for {author.email}")
    ctx.decision.unverified_staff = why
    ctx.fire(NAME, f"unverified mail from {author.email}: {why}")


def _token(ctx: Context, directory: Directory, author: Person, ticket: TicketView,
           headers) -> tuple[str | None, str | None]:
    """(proof, None) for a good token; (None, why) for a token that is not good."""
    mail = ctx.config.mail
    own = [mail.address, *([mail.reply_to] if mail.reply_to else [])]
    recipients = [*ctx.message.to, *ctx.message.cc, *envelope_recipients(headers)]
    problem = None
    for token in reply_tokens(recipients, own):
        found = directory.reply_token(token)
        if found is None:
            problem = "its reply address carries an unknown token"
        elif (found.ticket_id, found.employee_id) != (ticket.id, author.id):
            problem = "its reply address belongs to another ticket or another employee"
        elif found.revoked:
            problem = "its reply address was revoked"
        else:
            return f"the reply address of ticket {ticket.number}", None
    return None, problem
