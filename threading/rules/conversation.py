"""A chat goes on where it left off: a messenger message naming no ticket continues the
sender's ticket in that chat (R-CH-3).

Mail names its ticket (the subject marker, References); a chat does not, every message
is the next line of one conversation. So a message the adapter marks as chat (`chat`)
from a known contact joins, in this order:
- the ticket they chose for their messages (a button the bot offered, or /new), while
  it is not closed;
- their one ticket in the chat that could take it: the only open one, or the most recent
  one when none is open (whether a resolved or closed one reopens, or a new one starts,
  is reopen_policy's, per channel and type as for mail, R-TH-6);
- with several open (or an open one and a more recent closed one) the message is held
  and the customer asked which (Action.HELD; gateway/customer_actions.py asks and, on the
  answer, decides the held messages again). Unanswered, it goes to the most recent.
A message that named a ticket, a staff member's, or one the adapter marks as a fresh
start (a /new command) is left alone.

In a customer company's group chat the chat is the group's: the writer's tickets there,
and a new one belongs to the company the group is bound to.
"""

from helpgate.threading.context import Action, Context
from helpgate.threading.directory import Directory

NAME = "conversation"
DESCRIPTION = "continue the sender's ticket in a chat; ask which when several are open"


def apply(ctx: Context, directory: Directory) -> None:
    message = ctx.message
    if message.chat_id and ctx.decision.company_id is None:
        company = directory.company_by_chat(message.channel, message.chat_id)
        if company is not None:
            ctx.decision.company_id = company
            ctx.fire(NAME, f"group chat {message.chat_id} of company {company}")
    contact = ctx.decision.contact
    if not message.chat or ctx.decision.ticket is not None or contact is None:
        return
    closed = {state.id for state in ctx.config.statuses.states if state.closed}
    found = directory.chat_tickets(
        contact.id, message.channel, message.sender_id, message.chat_id,
        [state.id for state in ctx.config.statuses.states if not state.closed])
    if found.chosen is not None and (found.chosen.status not in closed
                                     or found.chosen.id == ctx.just_chosen):
        # (A closed one only when the customer has just chosen it, answering the
        # question: reopen_policy judges whether it reopens.)
        ticket, why = found.chosen, "the ticket the customer chose"
    else:
        candidates = {t.id: t for t in found.open}
        if found.latest is not None:
            candidates.setdefault(found.latest.id, found.latest)
        if len(candidates) > 1 and not ctx.no_asking:
            ctx.decision.choices = tuple(candidates.values())
            ctx.stop(NAME, Action.HELD, "several open tickets: the customer is asked which "
                     "ticket the message is for (" + ", ".join(
                         str(t.number) for t in candidates.values()) + ")")
            return
        # The open one (the most recently active, when the question went unanswered),
        # else the latest, for reopen_policy to judge.
        ticket = found.open[0] if found.open else found.latest
        why = ("no answer which ticket it is for: the most recently active"
               if len(candidates) > 1 else "the latest in this chat")
        if ticket is None:
            return
    ctx.decision.ticket = ticket
    ctx.fire(NAME, f"continues ticket {ticket.number} ({ticket.status}) on "
                   f"{message.channel}: {why}")
