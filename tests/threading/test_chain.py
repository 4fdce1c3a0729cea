"""The chain (DESIGN.md): rules run in the configured order, the chain stops at an ignore or
quarantine, the action is settled, and the trail names every rule that fired."""

from __future__ import annotations

from helpgate.config.schema import Config
from helpgate.threading.chain import RULES, decide
from helpgate.threading.context import Action
from helpgate.threading.markers import (
    format_marker,
    make_message_id,
    marker_numbers,
    ticket_of_message_id,
)
from tests.threading.fakes import ANNA, IVAN, FakeDirectory, context, ticket


def test_every_rule_has_a_name_description_and_apply():
    for name, module in RULES.items():
        assert name == module.NAME and module.DESCRIPTION and callable(module.apply)
    assert set(Config().threading.rules) == set(RULES)


def test_new_ticket_from_a_known_contact():
    ctx = decide(context(), FakeDirectory(people={"ivan@romashka.ru": IVAN}))
    assert ctx.decision.action == Action.NEW_TICKET
    assert ctx.fired == ["sender_identity"]
    assert ctx.decision.text == "Не печатает принтер."


def test_comment_on_a_marked_ticket_in_order():
    directory = FakeDirectory(tickets={5: ticket(5)}, people={"anna@helpgate.test": ANNA})
    ctx = decide(context(sender_email="anna@helpgate.test", subject="Re: [#5]",
                         text="Готово.\n\n> ##- Please type your reply above this line -##"),
                 directory)
    assert ctx.decision.action == Action.COMMENT
    assert ctx.fired == ["subject_marker", "sender_identity", "staff_auth", "quote_strip"]
    assert "no trusted mail server" in ctx.decision.unverified_staff  # a From proves nothing


def test_chain_stops_at_the_first_ignore():
    ctx = decide(context(headers={"auto-submitted": "auto-replied"}, subject="[#5]"),
                 FakeDirectory(tickets={5: ticket(5)}))
    assert ctx.decision.action == Action.IGNORED
    assert ctx.fired == ["auto_reply"] and ctx.decision.ticket is None


def test_order_is_data():
    config = Config(threading={"rules": ["references", "subject_marker"]})
    ours = make_message_id(7, "helpgate.localhost")
    ctx = decide(context(config, subject="[#5]", in_reply_to=(ours,)),
                 FakeDirectory(tickets={5: ticket(5), 7: ticket(7)}))
    assert ctx.decision.ticket.number == 7 and ctx.fired == ["references"]


def test_removed_rule_does_not_run():
    config = Config(threading={"rules": ["subject_marker"]})
    ctx = decide(context(config, headers={"auto-submitted": "auto-replied"}),
                 FakeDirectory())
    assert ctx.decision.action == Action.NEW_TICKET


def test_markers_round_trip():
    assert format_marker("[#{number}]", 42) == "[#42]"
    assert marker_numbers("[#{number}]", "Re: [#42] и [#7]") == [42, 7]
    own = make_message_id(42, "helpgate.localhost")
    assert ticket_of_message_id(own, "helpgate.localhost") == 42
    assert ticket_of_message_id(own, "other.example") is None
    assert ticket_of_message_id("<random@helpgate.localhost>", "helpgate.localhost") is None
