"""Each threading rule on its own (R-TH-1..R-TH-9), one case per header or client variant,
with an in-memory directory: a wrong decision points at the rule that made it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from helpgate.channels.base import DeliveryStatus
from helpgate.config.schema import Config, StatusConfig
from helpgate.threading import quotes
from helpgate.threading.context import Action
from helpgate.threading.markers import make_message_id
from helpgate.threading.rules import (
    auto_reply,
    bounce,
    company_domain,
    own_address,
    quote_strip,
    references,
    reopen_policy,
    sender_identity,
    spam_trap,
    subject_marker,
    throttle,
    unknown_sender,
    waiting_for_customer,
)
from tests.threading.fakes import ANNA, IVAN, NOW, FakeDirectory, context, ticket


# ------------------------------------------------------------------------ own_address
@pytest.mark.parametrize("fields, ignored", [
    ({"sender_email": "support@helpgate.localhost"}, True),
    ({"sender_email": "alias@helpgate.localhost"}, True),
    ({"message_id": make_message_id(5, "helpgate.localhost")}, True),
    ({"headers": {"x-helpgate-ticket": "5"}}, True),
    ({"message_id": "<hg5.0123abcd@other.example>"}, False),
    ({}, False),
])
def test_own_address(fields, ignored):
    config = Config(mail={"own_addresses": ["Alias@helpgate.localhost"]})
    ctx = context(config, **fields)
    own_address.apply(ctx, FakeDirectory())
    assert ctx.stopped is ignored
    assert (ctx.decision.action == Action.IGNORED) is ignored


# ----------------------------------------------------------------------------- bounce
def report(original: str | None) -> DeliveryStatus:
    return DeliveryStatus(original_message_id=original, recipient="x@romashka.ru",
                          action="failed", status="5.1.1", diagnostic="550 user unknown")


def test_bounce_is_recorded_against_our_message():
    ctx = context(delivery_status=report("<hg5.ab@helpgate.localhost>"))
    bounce.apply(ctx, FakeDirectory(outbox_ids={"<hg5.ab@helpgate.localhost>": 42}))
    assert (ctx.decision.action, ctx.decision.bounced_outbox_id) == (Action.IGNORED, 42)
    assert "5.1.1" in ctx.decision.reason


@pytest.mark.parametrize("original", ["<someone@else.example>", None])
def test_bounce_for_unknown_message_is_still_ignored(original):
    ctx = context(delivery_status=report(original))
    bounce.apply(ctx, FakeDirectory())
    assert (ctx.decision.action, ctx.decision.bounced_outbox_id) == (Action.IGNORED, None)


def test_no_report_no_bounce():
    ctx = context()
    bounce.apply(ctx, FakeDirectory())
    assert not ctx.stopped and ctx.fired == []


# ------------------------------------------------------------------------- auto_reply
@pytest.mark.parametrize("headers", [
    {"auto-submitted": "auto-replied"},
    {"auto-submitted": "auto-generated"},
    {"auto-submitted": "auto-notified; owner-email=x@y"},
    {"precedence": "bulk"}, {"precedence": "junk"}, {"precedence": "list"},
    {"precedence": "auto_reply"}, {"x-precedence": "bulk"},
    {"x-autoreply": "yes"}, {"x-autorespond": "Vacation"}, {"x-loop": "support@x"},
    {"x-auto-response-suppress": "All"}, {"x-auto-response-suppress": "DR, OOF"},
    {"x-auto-response-suppress": "OOF"}, {"x-auto-response-suppress": "AutoReply"},
    {"return-path": "<>"},
])
def test_auto_replies_are_ignored(headers):
    ctx = context(headers=headers)
    auto_reply.apply(ctx, FakeDirectory())
    assert ctx.decision.action == Action.IGNORED and ctx.fired == ["auto_reply"]


@pytest.mark.parametrize("headers", [
    {}, {"auto-submitted": "no"}, {"precedence": "normal"},
    {"x-auto-response-suppress": "DR, RN"}, {"return-path": "<ivan@romashka.ru>"},
])
def test_people_are_not_robots(headers):
    ctx = context(headers=headers)
    auto_reply.apply(ctx, FakeDirectory())
    assert not ctx.stopped


OUT_OF_OFFICE_SUBJECTS = [
    "Автоматический ответ: Не печатает принтер", "Автоответ: Принтер", "Автоответ",
    "Отсутствую в офисе", "Отсутствую в офисе: Принтер", "Вне офиса: Принтер",
    "Out of Office: Printer", "Out of office", "OUT OF OFFICE!",
    "Out of Office AutoReply: Printer", "Automatic reply: Printer", "Auto reply: Printer",
    "Auto-Reply: Printer", "Autoreply", "AutoReply: Printer",
    "Auto Response: Printer", "Abwesenheitsnotiz: Drucker", "Abwesenheitsnotiz",
    "Automatische Antwort: Drucker", "Réponse automatique : Imprimante",
    "自动回复: 打印机",
]


@pytest.mark.parametrize("subject", OUT_OF_OFFICE_SUBJECTS)
def test_out_of_office_subjects_answering_our_mail_are_ignored(subject):
    """A robot's notice back to our acknowledgement: our Message-ID in In-Reply-To (the
    marker alone does as well, tested below)."""
    ctx = context(subject=subject, in_reply_to=("<hg12.ab12@helpgate.localhost>",))
    auto_reply.apply(ctx, FakeDirectory())
    assert ctx.decision.action == Action.IGNORED and ctx.fired == ["auto_reply"]
    assert "subject" in ctx.decision.reason


def test_an_out_of_office_subject_with_our_marker_is_ignored():
    ctx = context(subject="Автоматический ответ: [#12] Не печатает принтер")
    auto_reply.apply(ctx, FakeDirectory())
    assert ctx.decision.action == Action.IGNORED


@pytest.mark.parametrize("subject", [*OUT_OF_OFFICE_SUBJECTS, "Autoreply: how to configure?",
                                     "Out of office: как настроить?"])
def test_a_new_mail_with_such_a_subject_is_stored_but_never_acknowledged(subject):
    """A subject alone is weak evidence: a customer may ask about auto-replies. Not
    acknowledging it is what breaks a loop; nothing is lost."""
    ctx = context(subject=subject)
    auto_reply.apply(ctx, FakeDirectory())
    assert not ctx.stopped and ctx.fired == ["auto_reply"]
    assert ctx.decision.no_acknowledgement.startswith("perhaps an auto-reply")


@pytest.mark.parametrize("subject", [
    "Out of office setting does not work", "Автоответ не включается в Outlook",
    "Re: Automatic reply: Printer", "Fwd: Out of Office: Printer", "Automation question",
    "Autumn schedule", "Недоступен сервер 1С", "Auto: не заводится", "Недоступен",
    "Нет на месте: картридж", "Abwesend", "Отсутствую",
])
def test_subjects_about_auto_replies_are_people(subject):
    ctx = context(subject=subject)
    auto_reply.apply(ctx, FakeDirectory())
    assert not ctx.stopped and ctx.decision.no_acknowledgement is None


@pytest.mark.parametrize("headers", [
    {"list-id": "<staff.romashka.ru>"},
    {"list-unsubscribe": "<mailto:leave@lists.romashka.ru>"},
    {"list-id": "Staff <staff.romashka.ru>", "list-unsubscribe": "<https://x/u>"},
])
def test_list_mail_is_stored_but_never_acknowledged(headers):
    ctx = context(headers=headers)
    auto_reply.apply(ctx, FakeDirectory())
    assert not ctx.stopped and ctx.fired == ["auto_reply"]
    assert ctx.decision.no_acknowledgement.startswith("mailing list (List-")


# --------------------------------------------------------------------------- throttle
@pytest.mark.parametrize("sent, people, replay, quarantined", [
    (61, {}, False, True),
    (60, {}, False, False),
    (500, {"ivan@romashka.ru": ANNA}, False, False),
    (500, {}, True, False),
])
def test_throttle(sent, people, replay, quarantined):
    ctx = context()
    ctx.replay = replay
    throttle.apply(ctx, FakeDirectory(sent={"ivan@romashka.ru": sent}, people=people))
    assert (ctx.decision.action == Action.QUARANTINED) is quarantined
    if quarantined:
        assert ctx.decision.reason.startswith("throttled: 61 messages")


def test_throttle_off():
    ctx = context(Config(threading={"throttle_max": 0}))
    throttle.apply(ctx, FakeDirectory(sent={"ivan@romashka.ru": 10_000}))
    assert not ctx.stopped


# ---------------------------------------------------------------------- spam_trap
@pytest.mark.parametrize(("headers", "replay", "quarantined"), [
    ({"x-helpgate-spam-trap": "http://spam.example"}, False, True),
    ({"x-helpgate-spam-trap": "http://spam.example"}, True, False),  # the admin's replay
    ({}, False, False),
])
def test_spam_trap(headers, replay, quarantined):
    ctx = context(headers=headers)
    ctx.replay = replay
    spam_trap.apply(ctx, FakeDirectory())
    assert ctx.stopped is quarantined
    if quarantined:
        assert ctx.decision.action == Action.QUARANTINED
        assert "'http://spam.example'" in ctx.decision.reason


def test_mail_cannot_set_the_spam_trap_header():
    """Only a channel's parser sets it; mail keeps only the headers rules read."""
    from helpgate.channels.mail.parse import RULE_HEADERS
    from helpgate.threading.message import SPAM_TRAP_HEADER
    assert SPAM_TRAP_HEADER not in RULE_HEADERS


# ---------------------------------------------------------------------- subject_marker
@pytest.mark.parametrize("subject", ["[#5] Принтер", "Re: [#5] Принтер", "RE:[# 5 ]Принтер",
                                     "Fwd: Re: [#5]", "Ответ: [#999] [#5] двойной"])
def test_marker_finds_the_ticket(subject):
    ctx = context(subject=subject)
    subject_marker.apply(ctx, FakeDirectory(tickets={5: ticket(5)}))
    assert ctx.decision.ticket.number == 5 and ctx.fired == ["subject_marker"]


def test_custom_marker_format():
    config = Config(threading={"marker": "(Ticket {number})"})
    ctx = context(config, subject="Re: (Ticket 5) printer [#7]")
    subject_marker.apply(ctx, FakeDirectory(tickets={5: ticket(5), 7: ticket(7)}))
    assert ctx.decision.ticket.number == 5


def test_marker_of_a_missing_ticket_leaves_a_note():
    ctx = context(subject="Re: [#999] старое")
    subject_marker.apply(ctx, FakeDirectory())
    assert ctx.decision.ticket is None and ctx.fired == []
    assert ctx.notes == ["subject_marker: marker [#999] names no ticket"]


# -------------------------------------------------------------------------- references
OURS = make_message_id(5, "helpgate.localhost")


@pytest.mark.parametrize("fields", [
    {"in_reply_to": (OURS,)},
    {"references": (OURS, "<customer@romashka.ru>")},
    {"in_reply_to": ("<stored@romashka.ru>",)},
    {"references": ("<unknown@x>", "<stored@romashka.ru>")},
])
def test_references_find_the_ticket(fields):
    ctx = context(**fields)
    references.apply(ctx, FakeDirectory(tickets={5: ticket(5)},
                                        stored_ids={"<stored@romashka.ru>": 5}))
    assert ctx.decision.ticket.number == 5 and ctx.fired == ["references"]


@pytest.mark.parametrize("fields", [
    {"in_reply_to": (make_message_id(77, "helpgate.localhost"),)},  # ours, no such ticket
    {"in_reply_to": ("<hg5.0123456789abcdef@elsewhere.example>",)},  # same shape, not ours
    {},
])
def test_references_without_a_ticket(fields):
    ctx = context(**fields)
    references.apply(ctx, FakeDirectory(tickets={5: ticket(5)}))
    assert ctx.decision.ticket is None


def test_references_do_not_override_a_marker():
    ctx = context(in_reply_to=(OURS,))
    ctx.decision.ticket = ticket(9)
    references.apply(ctx, FakeDirectory(tickets={5: ticket(5)}))
    assert ctx.decision.ticket.number == 9 and ctx.fired == []


# ------------------------------------------------------------ sender, company, unknown
def test_sender_identity_employee_and_contact():
    directory = FakeDirectory(people={"anna@helpgate.test": ANNA, "ivan@romashka.ru": IVAN})
    staff = context(sender_email="anna@helpgate.test")
    sender_identity.apply(staff, directory)
    assert staff.decision.author == ANNA and staff.decision.contact is None
    customer = context(sender_email="ivan@romashka.ru")
    sender_identity.apply(customer, directory)
    assert customer.decision.contact == IVAN and customer.decision.company_id == 3


def test_sender_identity_unknown():
    ctx = context(sender_email="nobody@x.example")
    sender_identity.apply(ctx, FakeDirectory())
    assert ctx.decision.author is None and ctx.fired == []


@pytest.mark.parametrize("sender, company", [
    ("maria@romashka.ru", 3), ("maria@sub.romashka.ru", None), ("fan@gmail.com", None),
    ("fan@mail.ru", None), ("fan@yandex.ru", None), ("fan@corp-mail.example", None),
])
def test_company_domain(sender, company):
    config = Config(threading={"public_domains": ["corp-mail.example"]})
    ctx = context(config, sender_email=sender)
    company_domain.apply(ctx, FakeDirectory(domains={
        "romashka.ru": 3, "gmail.com": 4, "mail.ru": 4, "yandex.ru": 4,
        "corp-mail.example": 4}))
    assert ctx.decision.company_id == company


def test_company_domain_skips_known_authors():
    ctx = context(sender_email="maria@romashka.ru")
    ctx.decision.author = IVAN
    company_domain.apply(ctx, FakeDirectory(domains={"romashka.ru": 3}))
    assert ctx.decision.company_id is None


@pytest.mark.parametrize("create, has_ticket, expected", [
    (True, False, "create"), (False, False, "admin"), (True, True, "admin"),
])
def test_unknown_sender(create, has_ticket, expected):
    ctx = context(Config(threading={"create_contacts": create}))
    if has_ticket:
        ctx.decision.ticket = ticket(5)
    unknown_sender.apply(ctx, FakeDirectory(admins=[ANNA]))
    if expected == "create":
        assert ctx.decision.create_contact and ctx.decision.author is None
    else:
        assert ctx.decision.author == ANNA and ctx.decision.stand_in_author
        assert not ctx.decision.create_contact


def test_unknown_sender_without_any_admin_is_the_system():
    ctx = context(Config(threading={"create_contacts": False}))
    unknown_sender.apply(ctx, FakeDirectory())
    assert ctx.decision.author is None and "the system" in ctx.notes[0]


# ------------------------------------------------------------------------- quote_strip
SEP_RU = "##- Пожалуйста, пишите ответ выше этой строки -##"
SEP_EN = "##- Please type your reply above this line -##"


@pytest.mark.parametrize("text, expected", [
    (f"Готово.\n\n{SEP_RU}\n\nстарое", "Готово."),
    (f"Готово.\n\n> {SEP_RU}\n> старое", "Готово."),
    ("Готово.\n\n> ##- Пожалуйста, пишите ответ выше\n> этой строки -##\n> старое", "Готово."),
    (f"Done.\n\n{SEP_EN}\nold", "Done."),
    (f"Спасибо!\n\nпн, 23 нояб. 2026 г. в 10:05, Support <s@x.ru>:\n> {SEP_RU}\n> старое",
     "Спасибо!"),
    (f"Спасибо!\n\nOn Mon, Nov 23, 2026 at 10:05 AM Support <\ns@x.ru> wrote:\n> {SEP_RU}",
     "Спасибо!"),
    (f"Ок.\n\n-----Original Message-----\nFrom: Support\nSent: Monday\nTo: Ivan\n"
     f"Subject: [#1]\n\n{SEP_RU}", "Ок."),
    ("Без цитаты.\n\nИван\n+7 916 000-00-00", "Без цитаты.\n\nИван\n+7 916 000-00-00"),
    ("Thanks!\n\nOn Mon, Nov 23, 2026 at 10:05 AM Bob <b@x.com> wrote:\n> old", "Thanks!"),
])
def test_quote_strip(text, expected):
    ctx = context(text=text)
    quote_strip.apply(ctx, FakeDirectory())
    assert ctx.decision.text == expected


@pytest.mark.parametrize("text, skipped", [
    ("Без цитаты.\n\nИван\n+7 916 000-00-00", True),
    ("Спасибо, всё работает.\n\nОльга", True),
    ("Hello\n\nOn Monday, Bob wrote\nold words", False),
    ("Hi\n\n---- Bob wrote ----\nold", False),
    ("Hi there\n\nLe lundi 23 nov. 2026, Bob a écrit\nancien", False),
    ("Ok\n\n> old\n> older", False),
])
def test_the_talon_precheck_only_skips_what_talon_would_not_cut(text, skipped):
    assert (not quotes._TALON_MAY_CUT.search(text)) is skipped
    if skipped:
        assert quotes._talon().extract_from_plain(text).strip() == text.strip()


def test_a_new_requests_reading_worked_out_in_a_parser_worker_is_taken_as_it_is():
    """A parser worker reads a new request's quotes (gateway/parse_worker.py): the rule
    takes that reading when it was made with the separators the config has now, and
    reads the text itself when it was not (the config changed) or the ticket is known."""
    text = f"Готово.\n\n{SEP_RU}\n\nстарое"
    config = Config()
    separators = quote_strip.our_separators(config)
    done = quotes.Reading(separators, "Прочитано в другом процессе.",
                          (quotes.Cut("separator", "ours"),))
    ctx = context(text=text, quote_reading=done)
    quote_strip.apply(ctx, FakeDirectory())
    assert ctx.decision.text == "Прочитано в другом процессе."
    assert "(separator: ours)" in ctx.notes[0]
    stale = done._replace(separators=("##- другой разделитель -##",))
    ctx = context(text=text, quote_reading=stale)
    quote_strip.apply(ctx, FakeDirectory())
    assert ctx.decision.text == "Готово."
    on_ticket = context(text=text, quote_reading=done)
    on_ticket.decision.ticket = ticket(number=50)
    quote_strip.apply(on_ticket, FakeDirectory(history={500: ["старое"]}))
    assert on_ticket.decision.text == "Готово."


def test_forward_is_kept_whole():
    text = "Посмотрите, пожалуйста.\n\n---------- Forwarded message ---------\nОт: X\n> a"
    ctx = context(subject="Fwd: счёт", text=text)
    quote_strip.apply(ctx, FakeDirectory())
    assert ctx.decision.text == text


def test_nothing_left_keeps_the_whole_text():
    text = f"> {SEP_RU}\n> только цитата"
    ctx = context(text=text)
    quote_strip.apply(ctx, FakeDirectory())
    assert ctx.decision.text == text and "whole text kept" in ctx.notes[0]


# ------------------------------------------------------- waiting and reopen policies
def test_waiting_for_customer_returns_to_open():
    ctx = context()
    ctx.decision.ticket = ticket(5, status="pending")
    waiting_for_customer.apply(ctx, FakeDirectory())
    assert ctx.decision.new_status == "open"


def test_staff_reply_does_not_end_the_wait():
    ctx = context()
    ctx.decision.ticket, ctx.decision.author = ticket(5, status="pending"), ANNA
    waiting_for_customer.apply(ctx, FakeDirectory())
    assert ctx.decision.new_status is None


def resolved(days_ago: float, type: str = "question"):
    return ticket(5, status="resolved", type=type, closed_at=NOW - timedelta(days=days_ago))


@pytest.mark.parametrize("reopen, days_ago, action", [
    ({}, 6.9, Action.REOPENED),
    ({}, 7.1, Action.NEW_TICKET_AFTER_WINDOW),
    ({"default": "0"}, 0.0001, Action.NEW_TICKET_AFTER_WINDOW),
    ({"default": "forever"}, 400, Action.REOPENED),
    ({"rules": [{"type": "incident", "window": "0"}]}, 1, Action.REOPENED),
    ({"rules": [{"type": "question", "window": "0"}]}, 1, Action.NEW_TICKET_AFTER_WINDOW),
    ({"rules": [{"channel": "email", "window": "12h"}, {"channel": "email", "window": "30d"}]},
     1, Action.NEW_TICKET_AFTER_WINDOW),
    ({"rules": [{"channel": "telegram", "window": "0"}]}, 1, Action.REOPENED),
    ({"rules": [{"type": "question", "channel": "telegram", "window": "0"}]}, 1,
     Action.REOPENED),
])
def test_reopen_window(reopen, days_ago, action):
    ctx = context(Config(reopen=reopen))
    ctx.decision.ticket = resolved(days_ago)
    reopen_policy.apply(ctx, FakeDirectory())
    assert ctx.decision.action == action
    if action == Action.REOPENED:
        assert (ctx.decision.ticket.number, ctx.decision.new_status) == (5, "open")
    else:
        assert ctx.decision.ticket is None and ctx.decision.previous_ticket.number == 5


def test_final_state_always_spawns_a_new_ticket():
    ctx = context(Config(reopen={"default": "forever"}))
    ctx.decision.ticket = ticket(5, status="closed", closed_at=NOW)
    reopen_policy.apply(ctx, FakeDirectory())
    assert ctx.decision.action == Action.NEW_TICKET_AFTER_WINDOW
    assert "final state" in ctx.notes[-1]


def test_a_closed_state_the_model_lets_reopen():
    states = [s if s.id != "closed" else s.model_copy(update={"next": ["open"]})
              for s in StatusConfig().states]
    ctx = context(Config(statuses=StatusConfig(states=states)))
    ctx.decision.ticket = ticket(5, status="closed", closed_at=NOW - timedelta(days=1))
    reopen_policy.apply(ctx, FakeDirectory())
    assert ctx.decision.action == Action.REOPENED


@pytest.mark.parametrize("status, author", [("open", None), ("pending", None),
                                            ("resolved", ANNA)])
def test_reopen_policy_leaves_other_cases_alone(status, author):
    ctx = context()
    ctx.decision.ticket, ctx.decision.author = ticket(5, status=status, closed_at=NOW), author
    reopen_policy.apply(ctx, FakeDirectory())
    assert ctx.decision.action is None and ctx.decision.ticket.number == 5


def test_quote_strip_reads_the_ticket_s_history_and_notes_its_evidence():
    quote = f"> {SEP_RU}\n>\n> Пришлите вывод команды."
    text = (f"Пн, 23 нояб. 2026 г. в 10:05, Support <s@x.ru>:\n{quote}\n\n"
            "Запустил, выдаёт одно и то же\n> error: address in use\n> exit 1")
    ctx = context(text=text)
    ctx.decision.ticket = ticket(5)
    directory = FakeDirectory(history={50: [f"{SEP_RU}\n\nПришлите вывод команды."]})
    quote_strip.apply(ctx, directory)
    assert ctx.decision.text == ("Запустил, выдаёт одно и то же\n> error: address in use\n"
                                 "> exit 1")
    assert "quote_markers: " in ctx.notes[-1] and "history: " in ctx.notes[-1]
    ctx = context(text=text)  # no ticket: no history, the lines read as the quote's
    quote_strip.apply(ctx, FakeDirectory())
    assert ctx.decision.text == "Запустил, выдаёт одно и то же"


def test_quote_strip_counts_the_words_of_our_html_design_as_ours(tmp_path):
    design = tmp_path / "design.html"
    design.write_text("<html><body>{{{CONTENT}}}<p>ООО «Помощь» — служба поддержки, "
                      "+7 495 000-00-00</p></body></html>", encoding="utf-8")
    text = ("Спасибо, понял.\n\nOn Mon, Nov 23, 2026 at 10:05 AM Support <s@x.ru> wrote:\n"
            f"> {SEP_RU}\n>\n> Перезагрузите роутер.\n>\n"
            "> ООО «Помощь» — служба поддержки, +7 495 000-00-00\n")
    ctx = context(Config(mail={"html_template": str(design)}), text=text)
    ctx.decision.ticket = ticket(5)
    quote_strip.apply(ctx, FakeDirectory(history={50: [f"{SEP_RU}\n\nПерезагрузите роутер."]}))
    assert ctx.decision.text == "Спасибо, понял."


def test_quote_strip_knows_our_notification_words_the_outbox_does_not_hold():
    text = ("Снова не печатает.\n\n23.11.2026, 10:05, \"Support\" <s@x.ru>:\n"
            f"> {SEP_RU}\n>\n> Здравствуйте!\n> Статус обращения 5 изменён: Решена.")
    ctx = context(Config(texts={"status_text": "Обращение {number}: {status}. {footer}"}),
                  text=text)
    ctx.decision.ticket = ticket(5)
    quote_strip.apply(ctx, FakeDirectory(history={50: ["Не печатает принтер."]}))
    assert ctx.decision.text == "Снова не печатает."


def test_a_chat_message_continues_the_senders_latest_ticket_on_that_channel():
    from dataclasses import replace

    from helpgate.threading.rules import conversation
    chat = {"channel": "telegram", "chat": True, "sender_id": "42", "sender_email": None}
    directory = FakeDirectory(tickets={
        3: replace(ticket(number=3, status="closed", contact_id=IVAN.id), channel="telegram"),
        7: replace(ticket(number=7, contact_id=IVAN.id), channel="telegram"),
        9: ticket(number=9, contact_id=IVAN.id)})
    ctx = context(**chat)
    ctx.decision.contact = IVAN
    conversation.apply(ctx, directory)
    assert ctx.decision.ticket.number == 7
    assert ctx.fired == ["conversation"]
    # Mail, a message that named its ticket, and a sender who is no contact: left alone.
    named = directory.tickets[9]
    for fields, found, contact in (({**chat, "chat": False}, None, IVAN),
                                   (chat, named, IVAN), (chat, None, None)):
        other = context(**fields)
        other.decision.ticket, other.decision.contact = found, contact
        conversation.apply(other, directory)
        assert other.decision.ticket is found and other.fired == []


def test_a_chat_message_with_several_open_tickets_is_held_and_the_customer_asked():
    from dataclasses import replace

    from helpgate.threading.rules import conversation
    chat = {"channel": "telegram", "chat": True, "sender_id": "42", "sender_email": None}
    on_telegram = {n: replace(ticket(number=n, contact_id=IVAN.id), channel="telegram")
                   for n in (4, 6)}
    directory = FakeDirectory(tickets=dict(on_telegram))
    ctx = context(**chat)
    ctx.decision.contact = IVAN
    conversation.apply(ctx, directory)
    assert ctx.decision.action == Action.HELD and ctx.stopped
    assert [t.number for t in ctx.decision.choices] == [6, 4]
    assert ctx.decision.ticket is None
    # The customer's answer is remembered: their messages go to the chosen ticket.
    directory.chosen["telegram:42"] = 4
    chosen = context(**chat)
    chosen.decision.contact = IVAN
    conversation.apply(chosen, directory)
    assert chosen.decision.ticket.number == 4 and not chosen.stopped
    # Unanswered in time: the most recently active open ticket, no question again.
    directory.chosen.clear()
    late = context(**chat)
    late.decision.contact, late.no_asking = IVAN, True
    conversation.apply(late, directory)
    assert late.decision.ticket.number == 6 and not late.stopped


def test_a_closed_chosen_ticket_no_longer_takes_the_chat():
    from dataclasses import replace

    from helpgate.threading.rules import conversation
    directory = FakeDirectory(tickets={
        4: replace(ticket(number=4, status="closed", contact_id=IVAN.id), channel="telegram"),
        6: replace(ticket(number=6, contact_id=IVAN.id), channel="telegram")},
        chosen={"telegram:42": 4})
    ctx = context(channel="telegram", chat=True, sender_id="42", sender_email=None)
    ctx.decision.contact = IVAN
    conversation.apply(ctx, directory)
    assert ctx.decision.ticket.number == 6


def test_a_group_chat_bound_to_a_company_gives_its_tickets_that_company():
    from helpgate.threading.rules import conversation
    directory = FakeDirectory(chats={"telegram:-1001": 12})
    ctx = context(channel="telegram", chat=True, sender_id="42", sender_email=None,
                  chat_id="-1001")
    conversation.apply(ctx, directory)
    assert ctx.decision.company_id == 12 and ctx.decision.ticket is None


def test_the_spam_trap_holds_with_a_rule_list_written_before_it():
    from helpgate.threading.chain import decide
    from helpgate.threading.message import SPAM_TRAP_HEADER
    rules = [r for r in Config().threading.rules if r != "spam_trap"]
    config = Config(threading={"rules": rules})
    ctx = context(headers={SPAM_TRAP_HEADER: "http://spam.example"})
    ctx.config = config
    decide(ctx, FakeDirectory())
    assert ctx.decision.action == Action.QUARANTINED and ctx.fired == ["spam_trap"]
