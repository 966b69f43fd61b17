"""Template files: %%smtp_send --template FILE, with {% extends %} and {% include %} from its folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TestingShell
from IPython.core.error import UsageError

from smtp_magic.render import render_template
from smtp_magic.server import CaptureServer

pytest.importorskip("jinja2")

BASE = """<html><body>
<h1>{% block title %}Report{% endblock %} for {{ company }}</h1>
<div class="content">{% block content %}(no content){% endblock %}</div>
{% include "partials/footer.html" %}
</body></html>
"""
FOOTER = "<p class=footer>Sent by {{ team }} &middot; {{ title_note | default('no note') }}</p>\n"


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    (folder / "partials").mkdir(parents=True)
    (folder / "report.html.j2").write_text(BASE)
    (folder / "partials" / "footer.html").write_text(FOOTER)
    return folder


@pytest.fixture
def configured(ip: TestingShell, smtp_server: CaptureServer) -> TestingShell:
    ip.run_line_magic("smtp_config", f"--host 127.0.0.1 --port {smtp_server.port} "
                      "--security none --from reports@example.test")
    ip.user_ns.update(company="ACME & Sons", team="Data team")
    return ip


def send_cell(ip: TestingShell, line: str, cell: str) -> None:
    ip.run_cell_magic("smtp_send", f"--to boss@example.test --sync {line}", cell)


def test_the_cell_extends_the_file_and_fills_its_blocks(configured: TestingShell,
                                                        smtp_server: CaptureServer,
                                                        templates: Path) -> None:
    ip = configured
    ip.user_ns["sales"] = 1234
    cell = ("{% set title_note = 'week 12' %}\n"
            "{% block title %}Sales{% endblock %}\n"
            "{% block content %}<p>Total: {{ sales }}</p>{{ super() }}{% endblock %}\n")
    send_cell(ip, f"--subject 'Weekly' --template {templates / 'report.html.j2'}", cell)
    (got,) = smtp_server.wait_for(1)
    html = got.message.get_body(("html",)).get_content()
    assert "Sales for ACME &amp; Sons" in html  # the cell's block, a notebook variable escaped
    assert "<p>Total: 1234</p>(no content)" in html  # super() keeps the base's block content
    assert "Sent by Data team" in html and "week 12" in html  # the include sees the cell's set
    text = got.message.get_body(("plain",)).get_content()
    assert "Sales for ACME & Sons" in text and "Total: 1234" in text


def test_a_relative_path_and_an_empty_cell(configured: TestingShell, smtp_server: CaptureServer,
                                           templates: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.chdir(templates.parent)
    send_cell(configured, "--subject Plain --template templates/report.html.j2", "{# as is #}")
    html = smtp_server.wait_for(1)[0].message.get_body(("html",)).get_content()
    assert "Report for ACME" in html and "(no content)" in html and "no note" in html


def test_each_row_fills_the_template(configured: TestingShell, smtp_server: CaptureServer,
                                     templates: Path) -> None:
    configured.user_ns["rows"] = [{"to": "a@example.test", "n": 1}, {"to": "b@example.test", "n": 2}]
    configured.run_cell_magic(
        "smtp_send", f"--each rows --to {{to}} --subject 'Row {{n}}' --sync "
        f"--template {templates / 'report.html.j2'}",
        "{% block content %}Row {{ n }}{% endblock %}")
    got = {m.subject: m.message.get_body(("html",)).get_content() for m in smtp_server.wait_for(2)}
    assert "Row 1" in got["Row 1"] and "Row 2" in got["Row 2"] and "Sent by" in got["Row 2"]


def test_include_works_without_template_from_the_notebook_folder(
        configured: TestingShell, smtp_server: CaptureServer, templates: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(templates)
    send_cell(configured, "--subject Included", '<p>Hi</p>{% include "partials/footer.html" %}')
    html = smtp_server.wait_for(1)[0].message.get_body(("html",)).get_content()
    assert "Sent by Data team" in html  # not "TypeError: no loader for this environment"


# -- errors: one sentence naming the file and the line ---------------------------------------

def error_of(ip: TestingShell, line: str, cell: str) -> str:
    with pytest.raises(UsageError) as info:
        send_cell(ip, f"--subject x {line}", cell)
    message = str(info.value)
    assert "\n" not in message and message.endswith((".", "?")), message
    assert "Traceback" not in message
    return message


def test_missing_template_file(configured: TestingShell, smtp_server: CaptureServer,
                               tmp_path: Path) -> None:
    msg = error_of(configured, f"--template {tmp_path / 'nope.html.j2'}", "{# as is #}")
    assert "nope.html.j2" in msg and "does not exist" in msg
    assert smtp_server.count() == 0


def test_syntax_error_in_an_included_file(configured: TestingShell, templates: Path) -> None:
    (templates / "partials" / "footer.html").write_text("<p>\n{{ team }\n</p>\n")
    msg = error_of(configured, f"--template {templates / 'report.html.j2'}", "{# as is #}")
    assert "partials/footer.html" in msg and "line 2" in msg and "syntax error" in msg


def test_undefined_value_in_the_base_names_file_and_line(configured: TestingShell,
                                                         templates: Path) -> None:
    del configured.user_ns["company"]
    msg = error_of(configured, f"--template {templates / 'report.html.j2'}", "{# as is #}")
    assert "'company'" in msg and "report.html.j2" in msg and "line 2" in msg


def test_include_of_a_missing_file(configured: TestingShell, templates: Path) -> None:
    (templates / "report.html.j2").write_text("<p>x</p>\n\n{% include 'missing.html' %}")
    msg = error_of(configured, f"--template {templates / 'report.html.j2'}", "{# as is #}")
    assert "'missing.html'" in msg and "report.html.j2" in msg and "line 3" in msg


def test_text_outside_blocks_is_an_error_naming_the_blocks(configured: TestingShell,
                                                           templates: Path) -> None:
    msg = error_of(configured, f"--template {templates / 'report.html.j2'}",
                   "{% block title %}T{% endblock %}\nHello, this would be lost")
    assert "line 2" in msg and "title, content" in msg


def test_syntax_error_in_the_cell_itself(configured: TestingShell, templates: Path) -> None:
    msg = error_of(configured, f"--template {templates / 'report.html.j2'}",
                   "{% block content %}\n{{ x }\n{% endblock %}")
    assert msg.startswith("The template has a syntax error on line 2")


def test_capture_and_template_do_not_mix(configured: TestingShell, templates: Path) -> None:
    msg = error_of(configured, f"--capture --template {templates / 'report.html.j2'}", "1")
    assert "--capture" in msg and "--template" in msg


def test_help_renders() -> None:
    from smtp_magic.magics import SmtpMagics

    assert "--template FILE" in SmtpMagics.smtp_send.parser.format_help()


def test_render_template_api_plain_text(templates: Path) -> None:
    (templates / "note.txt").write_text("Dear {{ name }},\n{% block body %}{% endblock %}\n-- {{ team }}\n")
    out = render_template("{% block body %}Numbers <are> up.{% endblock %}",
                          {"name": "Ann", "team": "T"}, "text/plain",
                          template=templates / "note.txt")
    assert out.text == "Dear Ann,\nNumbers <are> up.\n-- T\n"
