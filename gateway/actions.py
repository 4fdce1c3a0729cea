"""What a customer asks of a messenger bot, rather than writes for a ticket: close a
ticket, choose which open ticket their messages go to, rate a resolved one.

An action arrives like any message (a command, a pressed button): kept raw first, so it
is replayed and recovered like the rest, then carried out here inside the decision's
transaction. Status changes go through the one StatusService; the bot's answer is an
outbox row like any notification (durable, retried, never twice), with buttons where the
answer offers a choice. A button is only a request: the ticket it names must be the
customer's own, in a state where the action makes sense, or nothing changes and the
customer is told the button no longer applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from helpgate.config.schema import Config, Texts
from helpgate.outbound.notify import Notifier, rating_buttons
from helpgate.outbound.targets import Target
from helpgate.threading.context import Decision, Person, TicketView
from helpgate.threading.markers import format_marker
from helpgate.threading.message import ChatAction, InboundMessage
from helpgate.ticketstore import chats
from helpgate.ticketstore.models import Ticket
from helpgate.ticketstore.repository import SessionDirectory, ticket_view
from helpgate.ticketstore.statuses import StatusService

RATING_SCALE = range(1, 6)
# Decides held messages again: (session, inbound ids, fresh_first, chosen=ticket id) ->
# their results.
DecideHeld = Callable[..., list]


@dataclass(slots=True)
class Done:
    """What an action did, for the inbound row's result."""

    ticket: int | None
    reason: str
    held: list = dataclasses.field(default_factory=list)


class CustomerActions:
    def __init__(self, config: Config, notifier: Notifier, statuses: StatusService) -> None:
        self.config = config
        self.notifier = notifier
        self.statuses = statuses
        self.closed = {s.id for s in config.statuses.states if s.closed}
        self.open = [s.id for s in config.statuses.states if not s.closed]

    # ---- the question rule conversation asked for --------------------------------------

    def ask(self, session: Session, message: InboundMessage, decision: Decision,
            inbound_id: int, now: datetime) -> None:
        """Ask which of `decision.choices` a held message is for; once per waiting spell
        (the sender's later messages wait with it for the same answer)."""
        asked = session.info.setdefault("asked", set())
        if message.sender_key in asked or chats.held_count(session, message.sender_key):
            return
        asked.add(message.sender_key)
        texts = self._texts(message.text)
        buttons = [[[self._label(t), ChatAction("choose", t.number).data()]]
                   for t in decision.choices]
        buttons.append([[texts.chat_new_ticket_button, ChatAction("new").data()]])
        self._answer(session, message, decision.contact, texts.chat_which_ticket,
                     f"ask{inbound_id}", now, buttons)

    # ---- an action -----------------------------------------------------------------------

    def carry_out(self, session: Session, message: InboundMessage, inbound_id: int,
                  now: datetime, decide_held: DecideHeld) -> Done:
        action = message.action
        directory = SessionDirectory(session)
        person = directory.person_by_identity(message.channel, message.sender_id) \
            if message.sender_id else None
        key = f"action{inbound_id}"
        if person is None or person.kind != "contact":
            # Someone who never wrote (or staff): no ticket of theirs to act on.
            self._answer(session, message, None, self._texts("").chat_nothing_open, key, now)
            return Done(None, f"/{action.name} from someone who has no tickets")
        handler = getattr(self, f"_{action.name}")
        return handler(session, message, person, directory, key, now, decide_held)

    def _close(self, session, message, person, directory, key, now, decide_held) -> Done:
        action = message.action
        if action.ticket is not None:
            ticket = self._own(session, person, action.ticket)
            if ticket is None:
                return self._stale(session, message, person, key, now)
        else:
            found = directory.chat_tickets(person.id, message.channel, message.sender_id,
                                           message.chat_id, self.open)
            candidates = list(found.open)
            if found.chosen is not None and found.chosen.status not in self.closed:
                candidates = [found.chosen]
            if not candidates:
                self._answer(session, message, person, self._texts("").chat_nothing_open,
                             key, now)
                return Done(None, "/close: the customer has no open ticket")
            if len(candidates) > 1:
                texts = self._texts("")
                self._answer(session, message, person, texts.chat_close_which, key, now,
                             [[[self._label(t), ChatAction("close", t.number).data()]]
                              for t in candidates])
                return Done(None, "/close: the customer is asked which ticket")
            ticket = candidates[0]
        texts = self.notifier.texts_for_ticket(session, ticket)
        if ticket.status in self.closed:
            self._answer(session, message, person,
                         texts.chat_already_closed.format(number=ticket.number), key, now,
                         ticket=ticket)
            return Done(ticket.number, f"/close: ticket {ticket.number} is {ticket.status}")
        target = self.closing_state(ticket.status)
        if target is None:
            return self._stale(session, message, person, key, now)
        entity = session.get(Ticket, ticket.id, populate_existing=True, with_for_update=True)
        self.statuses.request(session, entity, target, now,
                              f"closed by the customer on {message.channel}")
        if target not in self.config.notifications.status_changes:
            # Else the status notification (with the rating buttons) says it.
            self._answer(session, message, person,
                         texts.chat_closed.format(number=ticket.number) + "\n\n"
                         + texts.chat_rate_prompt.format(number=ticket.number), key, now,
                         rating_buttons(ticket.number), ticket=ticket)
        return Done(ticket.number, f"the customer closed ticket {ticket.number} ({target})")

    def _rate(self, session, message, person, directory, key, now, decide_held) -> Done:
        action = message.action
        ticket = self._own(session, person, action.ticket)
        if ticket is None or ticket.status not in self.closed \
                or action.value not in RATING_SCALE:
            return self._stale(session, message, person, key, now)
        chats.rate(session, ticket.id, action.value, now)
        texts = self.notifier.texts_for_ticket(session, ticket)
        self._answer(session, message, person, texts.chat_rated.format(rating=action.value),
                     key, now, ticket=ticket)
        return Done(ticket.number, f"the customer rated ticket {ticket.number}: "
                                   f"{action.value} of 5")

    def _choose(self, session, message, person, directory, key, now, decide_held) -> Done:
        ticket = self._own(session, person, message.action.ticket)
        if ticket is None:
            return self._stale(session, message, person, key, now)
        chats.choose(session, message.channel, message.sender_id, ticket.id)
        held = decide_held(session, chats.held_for(session, message.sender_key), False,
                           chosen=ticket.id)
        texts = self.notifier.texts_for_ticket(session, ticket)
        self._answer(session, message, person, texts.chat_chosen.format(number=ticket.number),
                     key, now, ticket=ticket)
        return Done(ticket.number, f"the customer chose ticket {ticket.number} for their "
                                   f"messages ({len(held)} waiting placed)", held)

    def _new(self, session, message, person, directory, key, now, decide_held) -> Done:
        chats.choose(session, message.channel, message.sender_id, None)
        waiting = chats.held_for(session, message.sender_key)
        if not waiting:
            return self._stale(session, message, person, key, now)
        held = decide_held(session, waiting, True)
        number = next((r.ticket for r in held if r.ticket), None)
        view = self._own(session, person, number)
        if view is not None:
            texts = self.notifier.texts_for_ticket(session, view)
            self._answer(session, message, person, texts.chat_chosen_new.format(number=number),
                         key, now, ticket=view)
        return Done(number, f"the customer started a new ticket with {len(held)} waiting "
                            "messages", held)

    # ---- helpers -------------------------------------------------------------------------

    def closing_state(self, status: str) -> str | None:
        """Where a customer's /close takes a ticket: the first closed-class state it may
        move to (by default open -> resolved, which the timer later closes)."""
        for state in self.config.statuses.states:
            if state.id == status:
                return next((n for n in state.next if n in self.closed), None)
        return None

    def _own(self, session: Session, person: Person, number: int | None) -> TicketView | None:
        """Ticket `number` when it is this contact's (a button is only a request)."""
        if number is None:
            return None
        row = session.execute(select(Ticket.__table__).where(
            Ticket.__table__.c.number == number)).first()
        if row is None or row.contact_id != person.id:
            return None
        return ticket_view(row)

    def _stale(self, session, message, person, key, now) -> Done:
        self._answer(session, message, person, self._texts("").chat_button_stale, key, now)
        return Done(message.action.ticket,
                    f"{message.action.data()}: not possible now, nothing changed")

    def _label(self, ticket: TicketView) -> str:
        marker = format_marker(self.config.threading.marker, ticket.number)
        return f"{marker} {ticket.subject}".strip()[:60]

    def _texts(self, words: str) -> Texts:
        return self.config.text(self.config.customer_language(words))

    def _answer(self, session: Session, message: InboundMessage, person: Person | None,
                content: str, key: str, now: datetime, buttons: list | None = None,
                ticket: TicketView | None = None) -> None:
        """The bot's answer in the chat the action came from; there only (no contact on
        the target: an answer to a button makes no sense by mail)."""
        target = Target(message.channel, message.chat_id or message.sender_id)
        self.notifier.to_chat(session, target, content, key, now, buttons=buttons,
                              ticket_id=ticket.id if ticket else None)

