"""File names as stored are whatever a sender wrote; every place that writes a file or
names one in a mail uses safe_filename (issue #15 item 3)."""

import pytest

from helpgate.outbound.attachments import safe_filename


@pytest.mark.parametrize("name, safe", [
    ("\u202egnp.exe", "gnp.exe"),            # shown right-to-left as "exe.png"
    ("invoice\u2066.pdf\u2069.exe", "invoice.pdf.exe"),
    ("a\u200fb.txt", "ab.txt"),
])
def test_bidi_controls_cannot_disguise_a_name(name, safe):
    assert safe_filename(name) == safe
