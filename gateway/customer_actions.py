"""What a customer asks of a messenger bot, rather than writes for a ticket: close a
ticket, choose which open ticket their messages go to, rate a resolved one.

An action arrives like any message (a command, a pressed button): kept raw first, so it
is replayed and recovered like the rest, then carried out here inside the decision's
transaction. Status changes go through the one StatusService; the bot's answer is an
outbox row like any notification (durable, retried, never twice), with buttons where the
answer offers a choice. A button is only a request: the ticket it names must be the
customer's own, in a state where the action makes sense, or nothing changes and the
customer is told the button no longer applies.

One customer across channels (R-TH-10): a shared phone number is Telegram's own word
(the contact card of the sender's account) and binds at once; an email address typed in
the chat is only a claim, so a code is mailed there and the address binds when the
customer types it back (the code's digest kept, a few tries, half an hour).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from helpgate.config.schema import Config, Texts, judge_language
from helpgate.outbound.notify import Notifier, rating_buttons
from helpgate.outbound.targets import Target
from helpgate.threading.context import Decision, Person, TicketView
from helpgate.threading.markers import format_marker
from helpgate.threading.message import ChatAction, InboundMessage
from helpgate.ticketstore import chats, comments, people
from helpgate.ticketstore.repository import (
    SessionDirectory,
    identity_key,
    locked_ticket,
    ticket_row_by_number,
    ticket_view,
)
from helpgate.ticketstore.statuses import StatusService, closing_state

RATING_SCALE = range(1, 6)
# A message that is an email address alone, or a confirmation code alone.
ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+")
CODE = re.compile(r"\d{6}")
CODE_VALID = timedelta(minutes=30)
CODE_TRIES = 3
# Decides held messages again: (session, inbound ids, fresh_first, chosen=ticket id) ->
# their results.
DecideHeld = Callable[..., list]


@dataclass(slots=True)
class Done:
    """What an action did, for the inbound row's result."""

    ticket: int | None
    reason: str
    # The results of the held messages the action placed (logged by the pipeline).
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
        texts = self._texts(session, message, decision.contact)
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
            self._answer(session, message, None, self._texts(session, message).chat_nothing_open,
                         key, now)
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
                self._answer(session, message, person,
                             self._texts(session, message, person).chat_nothing_open,
                             key, now)
                return Done(None, "/close: the customer has no open ticket")
            if len(candidates) > 1:
                texts = self._texts(session, message, person)
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
        target = closing_state(self.config.statuses, ticket.status)
        if target is None:
            return self._stale(session, message, person, key, now)
        entity = locked_ticket(session, ticket.id)
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
        # The new ticket's acknowledgement says it, when there is one.
        if view is not None and not self.config.notifications.acknowledge_new_tickets:
            texts = self.notifier.texts_for_ticket(session, view)
            self._answer(session, message, person, texts.chat_chosen_new.format(number=number),
                         key, now, ticket=view)
        return Done(number, f"the customer started a new ticket with {len(held)} waiting "
                            "messages", held)

    # ---- one customer across channels ---------------------------------------------------

    def intercept(self, session: Session, message: InboundMessage, inbound_id: int,
                  now: datetime) -> Done | None:
        """A confirmation code the customer types back binds the address it confirms
        (and is no comment); an address typed alone starts its confirmation (and stays a
        comment: it may be meant for staff). None: a message like any."""
        if not (message.sender_id and message.chat and message.channel != "email"
                and not message.attachments and not message.edit_of):
            return None
        text = message.text.strip()
        if CODE.fullmatch(text):
            return self._code(session, message, text, inbound_id, now)
        if ADDRESS.fullmatch(text):
            self._confirm_address(session, message, text.lower(), inbound_id, now)
        return None

    def _code(self, session, message, code, inbound_id, now) -> Done | None:
        pending = chats.pending_email(session, message.channel, message.sender_id)
        if pending is None:
            return None
        email, kept, until = pending
        tries, _, digest = (kept or "").partition(":")
        if until is None or until < now:
            chats.set_pending_email(session, message.channel, message.sender_id, None)
            return None
        key = f"action{inbound_id}"
        if hmac.compare_digest(digest, _digest(message, email, code)):
            chats.set_pending_email(session, message.channel, message.sender_id, None)
            people.bind(session, message.channel, message.sender_id, now, email=email,
                        digits=self.config.threading.phone_match_digits)
            session.info.get("people", {}).pop(
                identity_key(message.channel, message.sender_id), None)
            bound = self._texts(session, message).chat_email_bound.format(email=email)
            self._answer(session, message, None, bound, key, now)
            return Done(None, f"the customer confirmed {email}: bound to them")
        left = CODE_TRIES - int(tries or 0) - 1
        chats.set_pending_email(session, message.channel, message.sender_id,
                                email if left > 0 else None,
                                f"{CODE_TRIES - left}:{digest}" if left > 0 else None,
                                until if left > 0 else None)
        self._answer(session, message, None, self._texts(session, message).chat_email_code_wrong,
                     key, now)
        return Done(None, f"a wrong confirmation code for {email}"
                          + ("" if left > 0 else "; no tries left"))

    def _confirm_address(self, session, message, email, inbound_id, now) -> None:
        person = SessionDirectory(session).person_by_identity(message.channel,
                                                              message.sender_id)
        if person is None or person.kind != "contact" or person.email:
            return   # a first message (a ticket like any), or the address is known
        code = f"{secrets.randbelow(10 ** 6):06d}"
        chats.set_pending_email(session, message.channel, message.sender_id, email,
                                f"0:{_digest(message, email, code)}", now + CODE_VALID)
        texts = self._texts(session, message, person)
        self.notifier.confirmation_code(session, email, texts, code, message.channel,
                                        f"verify{inbound_id}", now)
        self._answer(session, message, None, texts.chat_email_code_sent.format(email=email),
                     f"verify{inbound_id}", now)

    def phone_shared(self, session: Session, message: InboundMessage, inbound_id: int,
                     now: datetime) -> None:
        """Say thanks for a shared phone number (bound by the pipeline)."""
        self._answer(session, message, None, self._texts(session, message).chat_phone_bound,
                     f"phone{inbound_id}", now)

    # ---- helpers -------------------------------------------------------------------------

    def _own(self, session: Session, person: Person, number: int | None) -> TicketView | None:
        """Ticket `number` when it is this contact's (a button is only a request)."""
        if number is None:
            return None
        row = ticket_row_by_number(session, number)
        if row is None or row.contact_id != person.id:
            return None
        return ticket_view(row)

    def _stale(self, session, message, person, key, now) -> Done:
        self._answer(session, message, person,
                     self._texts(session, message, person).chat_button_stale, key, now)
        return Done(message.action.ticket,
                    f"{message.action.data()}: not possible now, nothing changed")

    def _label(self, ticket: TicketView) -> str:
        marker = format_marker(self.config.threading.marker, ticket.number)
        return f"{marker} {ticket.subject}".strip()[:60]

    def _texts(self, session: Session, message: InboundMessage,
               person: Person | None = None) -> Texts:
        """The bot's texts in the customer's language, by the email texts' rule (their
        own words): these words when they are words (not an address or a code), else
        their latest message, else the language their messenger reports, else the
        fallback."""
        config = self.config
        if config.language != "auto":
            return config.text(config.language)
        words = message.text.strip()
        judged = judge_language(words) if words and not (
            ADDRESS.fullmatch(words) or CODE.fullmatch(words)) else None
        if judged is None:
            if person is None and message.sender_id:
                person = SessionDirectory(session).person_by_identity(message.channel,
                                                                      message.sender_id)
            if person is not None and person.kind == "contact":
                # Their latest words, for the language of the bot's answer.
                judged = judge_language(comments.latest_words(session, person.id))
        if judged is None and message.sender_language:
            code = message.sender_language.lower()
            judged = "ru" if code.startswith(("ru", "uk", "be")) else \
                "en" if code.startswith("en") else None
        return config.text(judged or config.fallback_language)

    def _answer(self, session: Session, message: InboundMessage, person: Person | None,
                content: str, key: str, now: datetime, buttons: list | None = None,
                ticket: TicketView | None = None) -> None:
        """The bot's answer in the chat the action came from; there only (no contact on
        the target: an answer to a button makes no sense by mail)."""
        target = Target(message.channel, message.chat_id or message.sender_id)
        self.notifier.to_chat(session, target, content, key, now, buttons=buttons,
                              ticket_id=ticket.id if ticket else None)


def _digest(message: InboundMessage, email: str, code: str) -> str:
    """What is kept of a code: it names the person and the address it confirms."""
    return hashlib.sha256(f"{message.channel}:{message.sender_id}:{email}:{code}".encode()
                          ).hexdigest()[:48]
