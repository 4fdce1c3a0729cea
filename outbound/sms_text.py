"""What an SMS says and where it goes: phone numbers in E.164, the SMS templates, and the
rule for a text longer than `[sms] max_parts` parts, with the parts it costs.

A number is normalised when a contact's phone is chosen as an SMS address
(outbound/targets.py) and again when the SMS is sent, so a number typed any usual way
("8 (916) 123-45-67", "+7 916 123 45 67", "9161234567") goes out as +79161234567, and one
that cannot be made valid is no SMS address at all (a permanent error, never a guess).
Kept small and explicit rather than a numbering-plan library: only the rules below.

Parts follow GSM 03.38: a text entirely in the GSM 7-bit alphabet takes 160 characters in
one part and 153 in each of several (the extension characters ^{}[]~|€\\ count twice);
any other character (Cyrillic) makes the whole text UCS-2: 70 in one part, 67 in each
of several, counted in UTF-16 units. The providers split and join the parts themselves
and charge per part, so the number of parts is the cost.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from helpgate.config.schema import SmsConfig

_SEPARATORS = re.compile(r"[\s().\-/\u00a0\u2010-\u2015]")
# E.164: at most 15 digits with the country code; shorter than 8 is no subscriber number.
MIN_DIGITS, MAX_DIGITS = 8, 15
RUSSIA = "7"

GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXTENDED = set("^{}\\[~]|€\f")
GSM, UCS2 = "GSM-7", "UCS-2"
# (characters in a single part, characters in each part of several)
LIMITS = {GSM: (160, 153), UCS2: (70, 67)}
ELLIPSIS = {GSM: "...", UCS2: "…"}


def e164(phone: str | None, country: str = RUSSIA) -> str | None:
    """`phone` as +<digits>, or None when it cannot be a valid number.

    "+" or "00" starts an international number; 8XXXXXXXXXX and 7XXXXXXXXXX are Russian
    (the domestic 8 becomes +7) when the default country is 7; ten digits are a national
    number of the default country; other 11-15 digits without "+" are taken as
    international.
    """
    if not phone:
        return None
    text = _SEPARATORS.sub("", phone)
    if text.startswith("00"):
        text = "+" + text[2:]
    international = text.startswith("+")
    number = text[1:] if international else text
    if not number.isdigit() or not number.isascii() or number.startswith("0"):
        return None
    if not international:
        if country == RUSSIA and number[0] == "8" and len(number) != 11:
            return None  # the domestic 8 and a wrong count: no guessing
        if country == RUSSIA and len(number) == 11 and number[0] in "78":
            number = RUSSIA + number[1:]
        elif len(number) == 10:
            number = country + number
        elif len(number) < 11:
            return None
    if number.startswith(RUSSIA) and len(number) != 11:
        return None  # +7 (Russia, Kazakhstan) numbers are always ten digits after it
    if not MIN_DIGITS <= len(number) <= MAX_DIGITS:
        return None
    return "+" + number


def render(settings: SmsConfig, kind: str, text: str, number: str | int | None) -> str:
    """The SMS for a notification of `kind`: its template ("{text}" without one)."""
    template = settings.templates.get(kind, "{text}")
    return template.format(text=text.strip(), number=number if number is not None else "")


@dataclass(frozen=True, slots=True)
class Fitted:
    text: str
    parts: int
    encoding: str
    # Cut to fit max_parts (rule "trim"), or too long and not to be sent (rule "park").
    trimmed: bool = False
    too_long: bool = False

    def as_dict(self) -> dict:
        return {"parts": self.parts, "encoding": self.encoding,
                "characters": len(self.text), "trimmed": self.trimmed,
                "too_long": self.too_long}


def encoding(text: str) -> str:
    return GSM if all(c in GSM_BASIC or c in GSM_EXTENDED for c in text) else UCS2


def units(text: str, coding: str) -> int:
    """The text's length as the SMS counts it."""
    if coding == GSM:
        return sum(2 if c in GSM_EXTENDED else 1 for c in text)
    return len(text.encode("utf-16-le")) // 2


def parts(count: int, coding: str) -> int:
    single, each = LIMITS[coding]
    return 1 if count <= single else math.ceil(count / each)


def fit(text: str, max_parts: int, rule: str) -> Fitted:
    """`text` as it goes out: whole when it fits in `max_parts` parts; else cut to fit
    ending in an ellipsis ("trim"), or marked too long ("park")."""
    text = text.strip()
    coding = encoding(text)
    count = units(text, coding)
    needed = parts(count, coding)
    if needed <= max_parts:
        return Fitted(text, needed, coding)
    if rule != "trim":
        return Fitted(text, needed, coding, too_long=True)
    single, each = LIMITS[coding]
    room = (single if max_parts == 1 else each * max_parts) - units(ELLIPSIS[coding], coding)
    cut = _cut(text, room, coding)
    return Fitted(cut + ELLIPSIS[coding], max_parts, coding, trimmed=True)


def _cut(text: str, room: int, coding: str) -> str:
    """The longest start of `text` within `room` units, at a space when there is one in
    its last fifth."""
    used, end = 0, 0
    for index, char in enumerate(text):
        used += units(char, coding)
        if used > room:
            break
        end = index + 1
    head = text[:end]
    space = head.rfind(" ", int(len(head) * 0.8))
    return (head[:space] if space > 0 else head).rstrip()


def preview(settings: SmsConfig, kind: str, text: str, number: str | int | None) -> Fitted:
    """What a notification will cost by SMS: the text as it goes out, its parts."""
    return fit(render(settings, kind, text, number), settings.max_parts, settings.too_long)
