"""`helpgate webform check` (issue 18 part 4): the form's set-up — port, origins, fields,
file limits, ticket type — each a line with its fix; exit 1 when one must be fixed; a
field the config cannot take is named by the config's own error."""

from __future__ import annotations

import json


def test_webform_check(hg):
    code, out, _ = hg.run("webform", "check")
    assert code == 1 and "FAIL  config: the web form is off" in out
    hg.configure('[webform]\nenabled = true\nport = 0\nmax_files = 2\n'
                 'max_file_size = "1MB"\nallowed_origins = ["https://www.example.com"]\n'
                 'fields = [{name = "order", label = "Order", required = true}]\n')
    code, out, err = hg.run("webform", "check")
    assert (code, err) == (0, ""), out
    assert "ok    port: 127.0.0.1:0 is free to listen on" in out
    assert "ok    origins: may post it: the form's own page, https://www.example.com" in out
    assert "ok    fields: name, email, phone, order (text, required) and the message" in out
    assert "ok    files: up to 2 files of 1.0 MB each" in out
    assert out.rstrip().endswith("webform: all is well")
    hg.configure('[mail]\nmax_attachment_size = "100KB"\n[webform]\nenabled = true\n'
                 'port = 0\nmax_files = 1\nticket_type = "incident"\n')
    code, out, _ = hg.run("webform", "check", "--json")
    assert code == 1
    failed = {c["name"]: c for c in json.loads(out)["checks"] if not c["ok"]}
    assert set(failed) == {"files"}
    assert "new tickets are of type incident" in out
    assert "mail.max_attachment_size" in failed["files"]["fix"]
    hg.configure('[webform]\nenabled = true\nfields = [{name = "email", label = "E"}]\n')
    code, out, err = hg.run("webform", "check")
    assert code == 1 and "one of the form's own fields" in err
