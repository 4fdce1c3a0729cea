"""What mail clients write around a quote, in the languages of our customers' clients.

Collected from the clients' own locale strings (Outlook's reply header fields, Gmail's,
Apple Mail's and Thunderbird's attribution lines, forward banners) and from other reply
parsers' test data. The rules in text.py use them; nothing here is client-specific code.
"""

from __future__ import annotations

import re

# Reply-header field names (Outlook, OWA, Samsung, Lotus Notes, Apple Mail forwards).
FROM_FIELDS = [
    "from", "от", "від", "von", "de", "da", "van", "od", "från", "fra", "lähettäjä",
    "kimden", "gönderen", "发件人", "寄件者", "差出人", "보낸 사람", "보낸사람",
]
SUBJECT_FIELDS = [
    "subject", "тема", "betreff", "objet", "asunto", "oggetto", "assunto", "onderwerp",
    "temat", "předmět", "ämne", "emne", "aihe", "konu", "主题", "主旨", "件名", "제목",
]
OTHER_FIELDS = [
    # sent / date
    "sent", "date", "отправлено", "дата", "надіслано", "gesendet", "datum", "envoyé",
    "enviado", "enviada", "fecha", "inviato", "data", "verzonden", "wysłano", "odesláno",
    "skickat", "sendt", "lähetetty", "päivämäärä", "gönderildi", "tarih", "发送时间",
    "日期", "寄件日期", "送信日時", "日付", "보낸 날짜", "날짜",
    # to / cc
    "to", "cc", "кому", "копия", "копія", "an", "à", "a", "para", "aan", "do", "dw",
    "komu", "kopie", "till", "kopia", "til", "kopi", "vastaanottaja", "kopio", "kime",
    "bilgi", "收件人", "抄送", "收件者", "副本", "宛先", "받는 사람", "참조",
    # subject
    "subject", "тема", "betreff", "objet", "asunto", "oggetto", "assunto", "onderwerp",
    "temat", "předmět", "ämne", "emne", "aihe", "konu", "主题", "主旨", "件名", "제목",
]


def _names(names: list[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


class _Field:
    """A header-field pattern, which needs a colon: a line without one (most lines) is
    refused before the dozens of names are tried. The layers ask it of every line of every
    reply, several times; trying the names was several per cent of the pipeline's time."""

    __slots__ = ("pattern",)

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern, re.I)

    def match(self, line: str) -> re.Match | None:
        if ":" not in line and "：" not in line:
            return None
        return self.pattern.match(line)


# The prefix ("> ", "*") is taken whole (possessive): the names start with a letter, and a
# quoted line need not try every name at every split of its "> ".
_FIELD_START = r"^[\s>]*+\*?\s*"
# "От: …", "*From:* …", "> Von: …", "发件人：…" (a full-width colon in CJK clients).
HEADER_FIELD = _Field(
    rf"{_FIELD_START}({_names(FROM_FIELDS + OTHER_FIELDS)})\s*\*?\s*[:：]")
FROM_FIELD = _Field(rf"{_FIELD_START}({_names(FROM_FIELDS)})\s*\*?\s*[:：]")

SUBJECT_FIELD = _Field(
    rf"{_FIELD_START}(?:{_names(SUBJECT_FIELDS)})\s*\*?\s*[:：]\s*(.*)$")

# What clients put before a subject they answer or forward ("Re:", "Ответ:", "AW: Fwd:").
REPLY_PREFIX = re.compile(
    r"^\s*((re|aw|sv|vs|antw|odp|ответ|отв|fw|fwd|wg|tr|rv|enc|i|vb|doorst|ynt|回复|答复|転送)"
    r"\s*(\[\d+\])?\s*[:：]\s*)+", re.I)

# "-----Original Message-----" and its translations; also the bare rules Outlook draws.
ORIGINAL_MESSAGE = [
    "original message", "reply message", "antwort nachricht", "исходное сообщение",
    "оригинальное сообщение",
    "вихідне повідомлення", "оригінальне повідомлення", "ursprüngliche nachricht",
    "message d'origine", "message d’origine", "mensaje original", "messaggio originale",
    "mensagem original", "oorspronkelijk bericht", "oryginalna wiadomość",
    "wiadomość oryginalna", "původní zpráva", "ursprungligt meddelande",
    "oprindelig meddelelse", "opprinnelig melding", "alkuperäinen viesti",
    "orijinal mesaj", "özgün ileti", "原始邮件", "原始郵件", "元のメッセージ",
    "원본 메시지", "원래 메시지",
]
BANNER = re.compile(
    rf"^[\s>]*[-_=—–]{{2,}}\s*({_names(ORIGINAL_MESSAGE)})\s*[-_=—–]{{2,}}\s*$", re.I)
RULE_LINE = re.compile(r"^[\s>]*([-_=—–]\s*){5,}$")

# Forward banners: a forwarded message is the customer's information, kept whole.
FORWARDED = [
    "forwarded message", "begin forwarded message", "пересылаемое сообщение",
    "пересланное сообщение", "перенаправленное сообщение", "пересланий лист",
    "переслане повідомлення", "weitergeleitete nachricht", "message transféré",
    "mensaje reenviado", "messaggio inoltrato", "mensagem encaminhada",
    "doorgestuurd bericht", "wiadomość przekazana", "přeposlaná zpráva",
    "vidarebefordrat meddelande", "videresendt meddelelse", "videresendt melding",
    "välitetty viesti", "iletilen ileti", "转发的邮件", "轉寄的郵件", "転送されたメッセージ",
    "전달된 메시지",
]
FORWARD_BANNER = re.compile(
    rf"^[\s>]*(?:[-_=—–]{{2,}}\s*)?({_names(FORWARDED)})\s*(?:[-_=—–]{{2,}}|:)?\s*$",
    re.I | re.M)
FORWARD_SUBJECT = re.compile(
    r"^\s*(fwd?|fw|пересл|переслано|wg|tr|rv|enc|i|doorst|vs|vb|ilt|转发|転送|전달)\s*[:：]",
    re.I)

# The verb of an attribution line ("… wrote:", "… написал(а):"), in many languages.
WROTE = re.compile(
    r"(wrote|writes|писал|написал|написала|пишет|писав|написав|написала|пише|schrieb|"
    r"schreibt|a écrit|écrit|escribió|escribe|ha escrito|ha scritto|scrisse|scrive|"
    r"escreveu|escreve|schreef|napisał|napisała|pisze|napsal|napsala|píše|skrev|skriver|"
    r"kirjoitti|kirjoittaa|yazdı|写道|寫道|のメッセージ|が書きました|작성|님이 작성|"
    r"вы писали)", re.I)
# An attribution line ends with a colon, or, for some clients, with the verb itself
# (Android: "---- John Smith wrote ----").
ENDS_LIKE_ATTRIBUTION = re.compile(
    r"([:：]|wrote|skrev|schrieb|написал\(а\))\s*[-—]*\s*$", re.I)
# Where an attribution begins when the client put it on the line of the reply text
# ("reply--- On Wed, Apr 4, 2012 at 3:59 PM, me@domain.com wrote:").
ATTRIBUTION_START = re.compile(
    r"(?:^|\s|-{2,})((?:On|Le|Am|El|Il|Em|Op|Den|På|W dniu|Dnia)\s.*)$")
HAS_DATE_OR_ADDRESS = re.compile(r"(@|\d{1,2}[:.h]\d{2}|\d{4}|\d{1,2}[./-]\d{1,2})")
ADDRESS_IN_BRACKETS = re.compile(r"[<(\[]\s*(mailto:)?[^<>()\s]+@[^<>()\s]+\s*[>)\]]")
# How a real attribution line opens: a date, a weekday, the clients' "On"/"Le"/"Am"… or
# the verb itself (The Bat!: "Вы писали 23 ноября 2026 г., 10:05:"). A sentence of the
# customer's that ends "… вы писали:" opens with none of these.
OPENS_LIKE_ATTRIBUTION = re.compile(
    r"^[\W_]*(\d|(?:on|le|am|el|il|em|op|den|på|w dniu|dnia|il giorno)\s|"
    r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*,|(?:пн|вт|ср|чт|пт|сб|вс),|"
    r"(?:понедельник|вторник|среда|четверг|пятница|суббота|воскресенье),|"
    r"(?:mo|di|mi|do|fr|sa|so)\.,|(?:lun|mar|mer|jeu|ven|sam|dim)\.|"
    r"(?:вы|you)\s+(?:писали|написали|wrote))", re.I)
# Thunderbird's attribution in some locales names no verb: "23.11.2026 09:05, Support:" —
# the date first, then the time, then a name. "Созвон на 01.12.2026 10:00:" is not it.
DATE_TIME_NAME = re.compile(
    r"^[\W_]*(?:\w+,?\s+)?\d{1,4}[./-]\d{1,2}[./-]\d{2,4},?\s+\d{1,2}[:.]\d{2}"
    r"(?::\d{2})?\s*,\s*[^\d:,<>@]{1,60}[:：]\s*$")
HAS_TIME = re.compile(r"\b\d{1,2}[:.]\d{2}\b")
HAS_YEAR_OR_DATE = re.compile(r"\b(19|20)\d{2}\b|\b\d{1,2}[./-]\d{1,2}[./-]\d{2,4}\b")

# A line opening the customer's signature or a list footer below everything else.
SIGNATURE_START = re.compile(r"^(--\s*|__+\s*|—\s*)$")
# A quoted line: ">" or The Bat!'s default prefix, the quoted sender's initials ("S> ",
# "ИП> ": Account properties → Templates → Reply, "Sender information used for
# quotation: Initials").
QUOTE_LINE = re.compile(r"^\s*(?:[A-ZА-ЯЁ]{1,3})?>")
QUOTE_PREFIX = re.compile(r"^(\s*(?:[A-ZА-ЯЁ]{1,3})?>)+\s?")
