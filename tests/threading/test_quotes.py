"""The quote stripper's layers (threading/quotes/), each with its own cases, and the trail
that names the layer that cut — so a wrong cut can be traced to the rule that made it."""

from __future__ import annotations

import pytest

from helpgate.threading.quotes import explain, html, strip_quotes
from helpgate.threading.quotes import text as layers
from helpgate.threading.quotes.history import NUMBER, History, Numbered

SEP = "##- Пожалуйста, пишите ответ выше этой строки -##"
SEP_EN = "##- Please type your reply above this line -##"
SEPARATORS = [SEP, SEP_EN]
OLD = f"> {SEP}\n>\n> Здравствуйте!\n> Ваше обращение зарегистрировано под номером 42."


def cut(text: str, subject: str = "", markup: str | None = None,
        history: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """The kept text and the layers that cut, in order."""
    kept, trail = explain(text, markup, SEPARATORS, subject, history)
    assert all(step.evidence for step in trail)  # every cut says what it had
    return kept, [step.layer for step in trail]


# ------------------------------------------------------------------------ separator
@pytest.mark.parametrize("text", [
    f"Готово.\n\n{SEP}\nстарое",
    f"Готово.\n\n> {SEP}\n> старое",
    "Готово.\n\n> ##- Пожалуйста, пишите ответ выше\n> этой строки -##\n> старое",
    "Готово.\n\n##– Пожалуйста , пишите ответ выше этой строки –##\nстарое",  # mangled
    f"Готово.\n\n>> {SEP_EN}\n>> old",
])
def test_separator_in_every_form(text):
    assert cut(text) == ("Готово.", ["separator"])


def test_separator_takes_the_outlook_header_block_above_it():
    text = (f"Ок, жду.\n\n________________________________\nОт: Support "
            f"<support@helpgate.localhost>\nОтправлено: 23 ноября 2026 г. 10:05\n"
            f"Кому: Иван\nТема: [#42] Принтер\n\n{SEP}\nстарое")
    assert cut(text)[0] == "Ок, жду."


# ---------------------------------------------------------------------- attribution
@pytest.mark.parametrize("attribution", [
    "пн, 23 нояб. 2026 г. в 10:05, Support <support@helpgate.localhost>:",      # Gmail ru
    "23.11.2026, 10:05, \"Support\" <support@helpgate.localhost>:",           # Yandex
    "Понедельник, 23 ноября 2026, 10:05 +03:00 от Support "
    "<support@helpgate.localhost>:",                                          # Mail.ru
    "23 нояб. 2026 г., в 10:05, Support <support@helpgate.localhost> написал(а):",  # Apple
    "23.11.2026 10:05, Support пишет:",                                       # Thunderbird
    "On Mon, Nov 23, 2026 at 10:05 AM Support <support@helpgate.localhost> wrote:",
    "On Mon, Nov 23, 2026 at 10:05 AM Support <\nsupport@helpgate.localhost> wrote:",
    "Am Mo., 23. Nov. 2026 um 10:05 Uhr schrieb Support <support@helpgate.localhost>:",
    "Le lun. 23 nov. 2026 à 10:05, Support <support@helpgate.localhost> a écrit :",
    "El lun, 23 nov 2026 a las 10:05, Support (<support@helpgate.localhost>) escribió:",
    "W dniu 23.11.2026 o 10:05, Support pisze:\n",
    "2026年11月23日(月) 10:05 Support <support@helpgate.localhost>:",
    "2026년 11월 23일 (월) 오전 10:05, Support <support@helpgate.localhost>님이 작성:",
])
def test_attribution_lines_go_with_the_quote(attribution):
    text = f"Спасибо, заработало.\n\n{attribution.strip()}\n\n> Старый текст.\n> Ещё строка."
    assert cut(text)[0] == "Спасибо, заработало."


def test_an_attribution_over_an_unquoted_original_cuts_there():
    text = ("Lorem ipsum\n\nW dniu 28 stycznia 2015 01:53 użytkownik Zoe <zoe@x.com>\n"
            "napisał:\n\nBlah!")
    assert cut(text) == ("Lorem ipsum", ["attribution"])


def test_a_colon_line_of_the_customer_is_no_attribution():
    text = "Адрес доставки:\nМосква, ул. Ленина, 1\n\nТелефон для связи: +7 916 123-45-67"
    assert cut(text) == (text, [])


# -------------------------------------------------------------------- header blocks
@pytest.mark.parametrize("block", [
    "-----Original Message-----\nFrom: Support\nSent: Monday\nTo: Ivan\nSubject: [#42]",
    "-----Исходное сообщение-----\nОт: Support\nОтправлено: 23 ноября\nКому: Иван",
    "________________________________\nFrom: Support <support@helpgate.localhost>\n"
    "Sent: Monday, November 23, 2026 10:05 AM\nTo: Ivan\nSubject: [#42] Printer",
    "*Von:* Support\n*Gesendet:* Montag\n*An:* Iwan\n*Betreff:* Drucker",
    "-------- Исходное сообщение --------\nОт: Support <support@helpgate.localhost>\n"
    "Дата: 23.11.2026 10:05\nКому: ivan@romashka.ru\nТема: [#42] Принтер",   # Samsung
    "发件人: Support <support@helpgate.localhost>\n发送时间: 2026年11月23日 10:05\n收件人: Ivan\n"
    "主题: Drucker",
])
def test_reply_header_blocks(block):
    # Evidence: a banner or rule line above, or the subject this message answers.
    text = f"Ответ клиента.\n\n{block}\n\nСтарый текст уведомления."
    assert cut(text, subject="AW: Drucker") == ("Ответ клиента.", ["header_block"])


def test_a_header_block_at_the_very_top_is_the_message_s_own():
    text = "От: Иван <ivan@romashka.ru>\nТема: Принтер\n\nПринтер снова сломался."
    assert cut(text, subject="Принтер") == ("Принтер снова сломался.", ["header_block"])


def test_a_from_line_in_the_customer_s_text_is_not_a_block():
    text = "Счёт пришёл.\nОт: бухгалтерии ответа пока нет.\nЖдём."
    assert cut(text) == (text, [])


# -------------------------------------------------------------------- quote markers
def test_interleaved_reply_keeps_the_customer_s_segments_in_order():
    text = ("23.11.2026, 10:05, Support <support@helpgate.localhost>:\n"
            "> Какая модель принтера?\n> Уточните, пожалуйста.\n\nHP LaserJet 1020.\n\n"
            "> Горит ли индикатор?\n> Какого цвета?\n\n  Мигает оранжевым.  \n")
    assert cut(text) == ("HP LaserJet 1020.\n\nМигает оранжевым.", ["quote_markers"])


def test_bottom_posted_reply_keeps_the_customer_s_text_and_signature_below():
    text = ("Иван Петров\n+7 916 123-45-67\n\nOn Mon, Nov 23, 2026 at 10:05 AM Support "
            "<s@x.ru> wrote:\n> old\n> older\n\nМой ответ снизу.\n\n-- \nИван")
    assert cut(text)[0] == "Иван Петров\n+7 916 123-45-67\n\nМой ответ снизу.\n\n--\nИван"


def test_a_signature_alone_below_the_quote_is_the_client_s_not_new_words():
    text = ("Ответ сверху.\n\nOn Mon, Nov 23, 2026 at 10:05 AM Support <s@x.ru> wrote:\n"
            "> old\n> older\n\n-- \nИван Петров")
    assert cut(text)[0] == "Ответ сверху."


def test_a_line_the_customer_typed_with_a_quote_mark_stays():
    text = "Нужно:\n> 5 лицензий\nСрочно."
    assert cut(text) == (text, [])


def test_mobile_signature_is_kept():
    text = (f"Да, всё верно.\n\nОтправлено с iPhone\n\n23 нояб. 2026 г., в 10:05, Support "
            f"<support@helpgate.localhost> написал(а):\n\n{OLD}")
    assert cut(text)[0] == "Да, всё верно.\n\nОтправлено с iPhone"


# ------------------------------------------------------------------------- forwards
def test_a_forward_is_kept_whole_with_its_header():
    text = ("Посмотрите, пожалуйста.\n\n-------- Пересылаемое сообщение --------\n"
            "От: Бухгалтерия <buh@romashka.ru>\nТема: Счёт\n\nСчёт во вложении.")
    assert cut(text, subject="Fwd: Счёт") == (text, ["forward"])
    assert cut(text) == (text, ["forward"])


def test_a_forward_inside_old_history_is_history():
    text = ("Blah\n\n-----Original Message-----\n\nFYI\n\n"
            "---------- Forwarded message ----------\nFrom: bob@example.com\nTo: rob@x.com")
    assert cut(text) == ("Blah", ["header_block"])


# ----------------------------------------------------------------------------- HTML
@pytest.mark.parametrize("markup", [
    '<div dir="ltr">Новый текст</div><div class="gmail_quote"><div class="gmail_attr">'
    'пн, 23 нояб. 2026 г. в 10:05, Support &lt;s@x.ru&gt;:</div><blockquote>старое'
    '</blockquote></div>',
    '<div>Новый текст</div><div id="divRplyFwdMsg"><b>От:</b> Support</div><div>старое</div>',
    '<div>Новый текст</div><div>23.11.2026, 10:05, "Support" &lt;s@x.ru&gt;:</div>'
    '<blockquote>старое</blockquote>',
    '<p>Новый текст</p><div class="moz-cite-prefix">23.11.2026 10:05, Support пишет:</div>'
    '<blockquote type="cite">старое</blockquote>',
    '<div>Новый текст</div><div style="border:none;border-top:solid #E1E1E1 1.0pt;'
    'padding:3.0pt 0cm 0cm 0cm"><p><b>From:</b> Support</p></div><p>старое</p>',
])
def test_html_only_mail_is_cut_in_the_html(markup):
    text, trail = cut("", markup=markup)
    assert text == "Новый текст" and trail[0] == "html"


def test_html_without_a_quote_is_left_to_the_text_layers():
    assert html.cut("<p>Just text</p>") is None


# ---------------------------------------------------------------------- the seam
def test_strip_quotes_is_explain_without_the_trail():
    text = f"Готово.\n\n{OLD}"
    assert strip_quotes(text, None, SEPARATORS) == cut(text)[0] == "Готово."


def test_layer_functions_report_nothing_to_do_with_none():
    lines, known = ["Просто текст."], History((), SEPARATORS)
    assert layers.separator(lines, known) is None
    assert layers.header_block(lines, known) is None
    assert layers.quote_markers(lines, known) is None
    assert layers.attribution_cut(lines) is None


# Attribution lines of Gmail, Outlook for Mac, Apple Mail and Thunderbird in further
# languages, with the original below quoted and (mobile clients) unquoted.
MORE_ATTRIBUTIONS = [
    "Support <support@helpgate.localhost> 于2026年11月23日周一 10:05写道：",
    "po 23. 11. 2026 v 10:05 odesílatel Support <support@helpgate.localhost> napsal:",
    "Support <support@helpgate.localhost>, 23 Kas 2026 Pzt, 10:05 tarihinde şunu yazdı:",
    "ma 23. marrask. 2026 klo 10.05 Support (support@helpgate.localhost) kirjoitti:",
    "Den man. 23. nov. 2026 kl. 10:05 skrev Support <support@helpgate.localhost>:",
    "Il giorno lun 23 nov 2026 alle ore 10:05 Support <support@helpgate.localhost> ha "
    "scritto:",
    "Em seg., 23 de nov. de 2026 às 10:05, Support <support@helpgate.localhost> escreveu:",
    "Op ma 23 nov 2026 om 10:05 schreef Support <support@helpgate.localhost>:",
    "пн, 23 лист. 2026 р. о 10:05 Support <support@helpgate.localhost> пише:",
    "2026年11月23日(月) 10:05 Support <support@helpgate.localhost>:",
    "Понедельник, 23 ноября 2026, 10:05 +03:00 от Support <support@helpgate.localhost>:",
]


@pytest.mark.parametrize("attribution", MORE_ATTRIBUTIONS)
@pytest.mark.parametrize("quoted", [True, False])
def test_more_languages_quoted_and_unquoted(attribution, quoted):
    original = "Hello, your request 42 is registered.\nWe will answer soon."
    if quoted:
        original = "\n".join("> " + line for line in original.split("\n"))
    assert cut(f"Ответ клиента.\n\n{attribution}\n\n{original}")[0] == "Ответ клиента."


# ------------------------------------------- over-cutting (#16): the customer's look-alikes
GMAIL = (f"пн, 23 нояб. 2026 г. в 10:05, Support <support@helpgate.localhost>:\n\n> {SEP}\n>\n"
         f"> Пришлите вывод команды.")


def test_every_cut_names_its_layer_and_evidence():
    text = f"Готово.\n\n{GMAIL}"
    kept, trail = explain(text, None, SEPARATORS)
    assert kept == "Готово."
    assert trail[0].layer == "separator" and "separator" in trail[0].evidence


@pytest.mark.parametrize("paste", [
    "Запускаю, в консоли вот что:\n> sudo systemctl start helpgate\n> Job failed.\nЧто делать?",
    "Running it gives:\n> $ helpgate run\n> error: address in use\nAny idea?",
])
def test_a_pasted_quote_above_the_real_quote_stays(paste):
    assert cut(f"{paste}\n\n{GMAIL}")[0] == paste


def test_a_pasted_quote_below_the_quote_introduced_with_a_colon_stays():
    text = f"{GMAIL}\n\nВот вывод:\n> error: address in use\n> exit 1\n\nИван"
    assert cut(text) == ("Вот вывод:\n> error: address in use\n> exit 1\n\nИван",
                         ["quote_markers"])


def test_a_quote_in_the_middle_without_evidence_is_the_customer_s():
    text = "Было так\n> строка один\n> строка два\nи так осталось."
    assert cut(text) == (text, [])


@pytest.mark.parametrize("block", [
    "От: ООО «Ромашка»\nКому: ООО «Лютик»\nДата: 01.12.2026\nТема: оплата",
    "From: Vendor <noreply@vendor.example>\nSent: Monday, November 30, 2026 8:12 AM\n"
    "To: Ivan\nSubject: Shipment delayed",
])
def test_a_pasted_header_block_is_not_a_reply_header(block):
    text = f"Вот шапка:\n\n{block}\n\nПроверьте, пожалуйста.\n\n{GMAIL}"
    assert cut(text, subject="Re: [#42] Принтер")[0] == \
        f"Вот шапка:\n\n{block}\n\nПроверьте, пожалуйста."


def test_a_header_block_with_the_answered_subject_is_history():
    text = ("Ответ.\n\nFrom: Support <support@helpgate.localhost>\nDate: 23.11.2026 10:05\n"
            "To: Ivan\nSubject: [#42] Принтер\n\nСтарый текст.")
    kept, trail = explain(text, None, SEPARATORS, "Re: [#42] Принтер")
    assert kept == "Ответ." and "subject" in trail[0].evidence


@pytest.mark.parametrize("sentence", [
    "Созвон назначен на 01.12.2026 10:00:\n- Иван\n- Ольга",
    "Сделал, как Вы писали:\n1. Очистил кэш\n2. Перезашёл",
    "В письме от 20.11.2026 вы писали:\n1. Обновить клиент",
    "As you wrote:\n1. accounts\n2. projector",
])
@pytest.mark.parametrize("where", ["above", "below"])
def test_a_sentence_ending_in_a_date_or_you_wrote_is_no_attribution(sentence, where):
    text = f"{sentence}\n\n{GMAIL}" if where == "above" else f"{GMAIL}\n\n{sentence}"
    assert cut(text)[0] == sentence


def test_thunderbird_s_verbless_attribution_needs_its_shape_and_a_quote():
    assert layers.attribution_strength("23.11.2026 09:05, Support:", "") == layers.WEAK
    assert layers.attribution_strength("Созвон назначен на 01.12.2026 10:00:", "") == 0
    text = "Ответ.\n\n23.11.2026 09:05, Support:\n> старое\n> ещё"
    assert cut(text)[0] == "Ответ."
    unquoted = "Ответ.\n\n23.11.2026 09:05, Support:\nпервое\nвторое"
    assert cut(unquoted) == (unquoted, [])


@pytest.mark.parametrize("after", [
    "https://disk.yandex.ru/d/Qw3rTy?from=share&lang=ru",
    "/var/log/helpgate/error.log",
    "C:\\ProgramData\\Helpgate\\helpgate.toml",
])
def test_a_link_or_path_right_after_a_quote_is_the_customer_s(after):
    assert cut(f"{GMAIL}\n{after}\n\nИван")[0] == f"{after}\n\nИван"


def test_a_link_a_client_broke_inside_a_quote_stays_quoted():
    text = ("Blah\n\nOn Monday, 24 September, 2012 at 3:46 PM, bob wrote:\n\n> [Ticket #50]\n>\n"
            "> View ticket (http://example.com/action\n_nonce=3dd518)\n>\n")
    assert cut(text)[0] == "Blah"


def test_the_attribution_sharing_the_reply_s_line_is_split_only_over_a_quote():
    assert cut("reply On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:\n> Hi")[0] \
        == "reply"
    assert layers.split_shared_line(["Call On Wed, Apr 4, 2012 at 3:59 PM, bob@x.com wrote:",
                                     "first point"]) == \
        ["Call On Wed, Apr 4, 2012 at 3:59 PM, bob@x.com wrote:", "first point"]


@pytest.mark.parametrize("prefix", ["S> ", "> "])
def test_the_bat_greeting_with_an_answer_below_the_quote(prefix):
    text = (f"Здравствуйте, Support.\n\nВы писали 23 ноября 2026 г., 10:05:\n\n{prefix}{SEP}\n\n"
            f"{prefix}Какое время удобнее?\n\nС 15 до 18.\n\n-- \nС уважением,\n Сергей")
    assert cut(text)[0] == "Здравствуйте, Support.\n\nС 15 до 18.\n\n--\nС уважением,\n Сергей"


OURS = f"{SEP}\n\nЗдравствуйте!\n\nКакая модель принтера?\n\nКак он подключён?\n\nАнна"
OUTLOOK = ("Ответы в тексте.\n\n________________________________\nОт: Support "
           "<support@helpgate.localhost>\nОтправлено: 23 ноября 2026 г. 10:05\nКому: Иван\n"
           f"Тема: [#42] Принтер\n\n{OURS.replace('модель принтера?', 'модель принтера?', 1)}")


def test_answers_inside_a_flattened_outlook_quote_come_back_with_the_history():
    text = OUTLOOK.replace("Как он", "HP LaserJet 1020.\n\nКак он").replace(
        "подключён?", "подключён?\n\nПо USB.")
    assert cut(text)[0] == "Ответы в тексте."  # no evidence which lines are whose
    kept, trail = cut(text, history=(OURS, "Не печатает принтер."))
    assert kept == "Ответы в тексте.\n\nHP LaserJet 1020.\n\nПо USB."
    assert trail == ["separator", "history"]


def test_answers_outlook_prefaced_with_the_writer_s_name_come_back_without_history():
    text = OUTLOOK.replace("Как он", "[Иван Петров] HP LaserJet 1020.\n\nКак он")
    assert cut(text)[0] == "Ответы в тексте.\n\n[Иван Петров] HP LaserJet 1020."


def test_with_the_history_a_quote_matching_what_we_sent_still_goes():
    text = f"Спасибо.\n\n{GMAIL}"
    history = (f"{SEP}\n\nПришлите вывод команды.",)
    assert cut(text, history=history) == ("Спасибо.", ["separator"])


def test_history_matches_rewrapped_and_short_lines():
    known = History(["Ваше обращение зарегистрировано под номером 42. Мы ответим вам."], [SEP])
    assert known.flags(["> Ваше обращение зарегистрировано под", "> номером 42. Мы",
                        "> ответим вам.", "Да", "HP LaserJet"]) == [True, True, True, False,
                                                                    False]


@pytest.mark.parametrize("number", [7, 42, 1000123])
def test_our_templates_keyed_once_match_as_the_texts_with_the_number_in_them(number):
    """Our notifications' keys are worked out once with NUMBER in the number's place
    (history.Numbered): for any ticket they flag exactly what the formatted texts flag."""
    templates = ["Ваше обращение №{number} зарегистрировано.\nМы ответим вам.",
                 "Request #{number}: status {number}-resolved", "Без номера, просто текст."]
    lines = ["> Ваше обращение №42 зарегистрировано.", "> Мы ответим вам.",
             f"> Request #{number}: status {number}-resolved", "> Request #42", "Да",
             "> Без номера, просто текст.", f"№{number} зарегистрировано"]
    formatted = History([t.format(number=number) for t in templates], [SEP])
    keyed = History((), [SEP], templates=Numbered([t.format(number=NUMBER)
                                                   for t in templates]), number=number)
    assert keyed.flags(lines) == formatted.flags(lines)
    assert True in keyed.flags(lines) and bool(keyed)


@pytest.mark.parametrize("quote", [GMAIL, GMAIL.replace(f"> {SEP}\n>\n", ""),
                                   "> 23 нояб. 2026 г., в 10:05, Support <s@x.ru> "
                                   "написал(а):\n>\n> Пришлите вывод команды."])
def test_a_pasted_quote_at_the_very_top_of_a_top_posted_reply_stays(quote):
    paste = "> error: address in use\n> exit 1\nВот что выдаёт служба."
    assert cut(f"{paste}\n\n{quote}")[0] == paste


def test_html_nested_past_libxml2s_depth_keeps_its_text_in_the_quote_layers():
    """The quote layers render HTML as the parser does (one to_text): no nesting depth
    loses the words below it (issue #14 item 10)."""
    from helpgate.threading.quotes.html import to_text
    html = "<html><body>" + "<div>" * 400 + "deep words" + "</div>" * 400 + "</body></html>"
    assert "deep words" in to_text(html)
