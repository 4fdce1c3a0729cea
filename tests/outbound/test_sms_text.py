"""What an SMS says and where it goes (outbound/sms_text.py): numbers in E.164, parts as
GSM 03.38 counts them, the length rule, templates; and the SMS gateway registry with a
provider plugged in through the entry-point group helpgate.sms_gateways."""

from __future__ import annotations

import importlib
import sys
import textwrap
from datetime import datetime, timezone

import pytest

from helpgate.channels.sms import api
from helpgate.config.load import ConfigError, load_config
from helpgate.config.schema import Config, SmsConfig
from helpgate.gateway.channels import CHANNELS, parse_kept, transports
from helpgate.outbound.base import Outgoing
from helpgate.outbound.sms import SmsTransport
from helpgate.outbound.sms_text import GSM, UCS2, e164, fit, preview, render


@pytest.mark.parametrize(("typed", "expected"), [
    ("8 (916) 123-45-67", "+79161234567"),
    ("89161234567", "+79161234567"),
    ("+7 916 123 45 67", "+79161234567"),
    ("7-916-123-45-67", "+79161234567"),
    ("9161234567", "+79161234567"),
    ("+49 151 1234 5678", "+4915112345678"),
    ("0049 151 12345678", "+4915112345678"),
    ("380441234567", "+380441234567"),
    ("+7 916 123 45 6", None),          # +7 is always ten digits after it
    ("8 916 123 45 678", None),
    ("12-34", None),
    ("+0 123 456 789", None),
    ("call me", None),
    ("+7 916 123 45 67 ext 2", None),
    ("", None),
    (None, None),
    ("+1234567890123456", None),         # 16 digits: longer than E.164 allows
])
def test_numbers_are_normalised_to_e164_or_refused(typed, expected):
    assert e164(typed) == expected


def test_ten_digits_take_the_configured_country():
    assert e164("1512345678", "49") == "+491512345678"
    assert e164("89161234567", "49") == "+89161234567"   # the 8-prefix is Russia's only


@pytest.mark.parametrize(("text", "parts", "coding"), [
    ("a" * 160, 1, GSM), ("a" * 161, 2, GSM), ("a" * 306, 2, GSM), ("a" * 307, 3, GSM),
    ("{" * 80, 1, GSM), ("{" * 81, 2, GSM),               # extension characters count twice
    ("я" * 70, 1, UCS2), ("я" * 71, 2, UCS2), ("я" * 134, 2, UCS2), ("я" * 135, 3, UCS2),
    ("a" * 69 + "😀", 2, UCS2),                          # an emoji is two UTF-16 units
])
def test_parts_as_the_sms_counts_them(text, parts, coding):
    fitted = fit(text, 10, "trim")
    assert (fitted.parts, fitted.encoding, fitted.trimmed) == (parts, coding, False)


def test_trim_cuts_at_a_word_and_ends_in_an_ellipsis_of_the_same_alphabet():
    latin = fit("word " * 100, 2, "trim")
    assert latin.trimmed and latin.parts == 2 and latin.encoding == GSM
    assert latin.text.endswith("word...") and len(latin.text) <= 306
    cyrillic = fit("слово " * 100, 1, "trim")
    assert cyrillic.text.endswith("слово…") and len(cyrillic.text) <= 70
    again = fit(cyrillic.text, 1, "trim")   # trimming again changes nothing
    assert (again.text, again.parts, again.trimmed) == (cyrillic.text, 1, False)


def test_park_marks_a_long_text_and_keeps_it():
    fitted = fit("я" * 200, 2, "park")
    assert fitted.too_long and fitted.parts == 3 and fitted.text == "я" * 200


def test_templates_name_the_text_and_the_number():
    settings = SmsConfig(templates={"status": "#{number}: {text}"})
    assert render(settings, "status", " Решена. ", 12) == "#12: Решена."
    assert render(settings, "comment", "Ответ {x}", 12) == "Ответ {x}"
    assert preview(settings, "status", "Решена.", 12).as_dict() == {
        "parts": 1, "encoding": UCS2, "characters": 12, "trimmed": False, "too_long": False}


def test_sms_config_errors_name_the_key(tmp_path):
    path = tmp_path / "helpgate.toml"
    for text, words in [
        ('[sms]\nstatus_changes = ["done"]\n', "sms.status_changes names unknown status"),
        ('[sms]\ntemplates = { comment = "{name}" }\n', "may name only {text} and {number}"),
        ('[sms]\ntemplates = { topic = "{text}" }\n', "no SMS template kind 'topic'"),
        ('[sms]\ndefault_country_code = "x"\n', "not a country calling code"),
        ('[sms]\nprovider = "sms c"\n', "not a gateway name"),
        ('[sms]\nmax_parts = 0\n', "sms.max_parts"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match="sms"):
            load_config(path)
        with pytest.raises(ConfigError) as error:
            load_config(path)
        assert words in str(error.value), (text, str(error.value))


def test_sms_is_a_registered_channel_that_receives_nothing():
    assert CHANNELS["sms"].kind.adapters(Config(), None) == []
    message = parse_kept("sms", b"anything", datetime(2026, 11, 23, tzinfo=timezone.utc))
    assert message.problem == "SMS is an outbound channel: helpgate receives nothing by SMS"
    assert "sms" not in transports(Config())


def test_a_provider_that_does_not_exist_stops_the_start_with_one_line():
    with pytest.raises(api.SmsSetupError, match=r"sms.provider 'kannel': no such SMS "
                       r"gateway; built in: smsc, smsru, smsaero"):
        transports(Config(sms={"provider": "kannel"}))
    with pytest.raises(api.SmsSetupError, match=r"\(SMS.ru\) needs sms.api_key"):
        transports(Config(sms={"provider": "smsru"}))
    with pytest.raises(api.SmsSetupError, match="needs sms.login and sms.password"):
        transports(Config(sms={"provider": "smsc"}))


PLUGIN = '''
"""A provider from another package: what helpgate.sms_gateways plugs in."""
from helpgate.channels.sms.api import Balance, Refused, Sent


class EchoGateway:
    title = "Echo"
    tracks_our_id = False
    sent = []

    def __init__(self, settings):
        self.base_url = settings.base_url or "echo://"
        self.prefix = settings.options.get("prefix", "")

    async def send(self, phone, text, our_id):
        if phone.endswith("0000"):
            raise Refused("Echo: no such subscriber", what="number")
        EchoGateway.sent.append((phone, self.prefix + text, our_id))
        return Sent(str(our_id))

    async def balance(self):
        return Balance("7", "EUR")

    async def was_sent(self, phone, our_id):
        raise NotImplementedError

    async def close(self):
        pass
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution with an entry point in helpgate.sms_gateways."""
    (tmp_path / "echo_sms.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    info = tmp_path / "echo_sms-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-sms\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[helpgate.sms_gateways]\necho = echo_sms:EchoGateway\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("echo_sms", None)


async def test_a_provider_plugs_in_through_the_entry_point_group(plugin):
    config = Config(sms={"provider": "echo", "options": {"prefix": "[desk] "}})
    transport = transports(config)["sms"]
    assert isinstance(transport, SmsTransport)
    result = await transport.send(Outgoing(id=3, channel="sms", kind="comment",
                                           recipient="8 916 123-45-67", subject=None,
                                           text="mail form", content="Готово."))
    assert result.delivered
    refused = await transport.send(Outgoing(id=4, channel="sms", kind="comment",
                                            recipient="+79160000000", subject=None,
                                            text="", content="Готово."))
    assert (refused.delivered, refused.temporary, refused.error) == (
        False, False, "Echo: no such subscriber")
    await transport.close()
    assert sys.modules["echo_sms"].EchoGateway.sent == [("+79161234567", "[desk] Готово.", 3)]
    with pytest.raises(api.SmsSetupError, match="installed: echo"):
        api.gateway(SmsConfig(provider="nope"))
