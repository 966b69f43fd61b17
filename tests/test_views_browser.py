"""Views of message HTML are inert, in headless Chromium: %smtp_inbox, --preview, the form's
preview and a rendered body each show a hostile message (``<script>``, ``onerror``, ``onload``,
a ``javascript:`` link, a meta refresh) as the notebook would, with no script running anywhere —
every script in the message calls a beacon on 127.0.0.1, and the beacon stays silent — while its
``cid:`` image is still visible and the frame is about as tall as its content."""

from __future__ import annotations

import io
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any

import pytest
from IPython.utils.capture import capture_output
from lab import chromium

from smtp_magic import config
from smtp_magic.server import CaptureServer

if TYPE_CHECKING:
    from conftest import Beacon, TestingShell

pytestmark = pytest.mark.browser

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

RED = (255, 0, 0)


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 900, "height": 900})


def hostile(url: str) -> str:
    """Markup a careless or malicious sender puts in a message; every trick calls ``url``."""
    call = f"fetch('{url}/' + %r); parent.__pwned = 1"
    return (
        f"<meta http-equiv='refresh' content=\"0;url=javascript:{call % 'refresh'}\">"
        f"<script>{call % 'script'}</script>"
        f"<p>Quarterly numbers <img src='nope.png' alt='x' onerror=\"{call % 'onerror'}\"></p>"
        f"<svg onload=\"{call % 'svg'}\" width='10' height='10'></svg>"
        f"<p><a id='js' href=\"javascript:{call % 'link'}\">open the report</a></p>"
    )


def red_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (160, 80), RED).save(buf, "PNG")
    return buf.getvalue()


def red_figure() -> Any:
    fig = plt.figure(figsize=(2, 1), dpi=100)
    fig.patch.set_facecolor("red")
    return fig


def show(page: Any, html: str) -> None:
    """Put a notebook output in the page, as a trusted output of JupyterLab is rendered."""
    page.set_content(f"<!DOCTYPE html><html><head><title>notebook</title></head><body>{html}"
                     "</body></html>", wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")


def assert_inert(page: Any, beacon: Beacon) -> None:
    frames = page.locator("iframe")
    assert frames.count() == 1
    assert frames.first.get_attribute("sandbox") == ""
    link = page.frame_locator("iframe").locator("#js")
    link.click()
    time.sleep(0.5)
    assert beacon.hits == [], f"a script of the message ran: {beacon.hits}"
    assert page.evaluate("window.__pwned") is None and page.title() == "notebook"


def assert_red_image_visible(page: Any) -> None:
    frame = page.locator("iframe").first
    frame.scroll_into_view_if_needed()
    shot = Image.open(io.BytesIO(frame.screenshot())).convert("RGB")
    data = shot.tobytes()
    red = sum(1 for i in range(0, len(data), 3)
              if data[i] > 200 and data[i + 1] < 60 and data[i + 2] < 60)
    assert red > 2000, f"the cid: image is not visible ({red} red pixels)"


def assert_fitted(page: Any) -> None:
    """The frame is about as tall as what it shows (not a fixed 360/420 px); the estimate may
    give a broken image of unknown size 150 px."""
    handle = page.locator("iframe").first.element_handle()
    box = handle.bounding_box()
    inner = handle.content_frame()
    content = inner.evaluate("Math.ceil(document.documentElement.getBoundingClientRect().height)")
    assert content * 0.8 <= box["height"] <= content * 1.3 + 150, (box["height"], content)


def test_inbox_shows_a_hostile_message_inert_with_its_image(
    page: Any, beacon: Beacon, ip: TestingShell, smtp_server: CaptureServer
) -> None:
    cid = make_msgid(domain="attacker.test")
    msg = EmailMessage()
    msg["From"], msg["To"] = "mallory@attacker.test", "you@example.test"
    msg["Subject"] = "<b>Subject</b> with <img src=x onerror=alert(1)> markup"
    msg.set_content("text version")
    msg.add_alternative(hostile(beacon.url) + f"<p><img src='cid:{cid[1:-1]}'></p>",
                        subtype="html")
    msg.get_payload()[1].add_related(red_png(), "image", "png", cid=cid)
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:  # anyone on loopback can
        client.send_message(msg)
    smtp_server.wait_for(1)

    with capture_output() as captured:
        ip.run_cell("%smtp_inbox")
    html = captured.outputs[0].data["text/html"]
    assert "&lt;b&gt;Subject&lt;/b&gt;" in html  # the subject is text, not markup
    show(page, html)
    assert page.locator("summary b").inner_text().startswith("<b>Subject</b>")
    assert_inert(page, beacon)
    assert_red_image_visible(page)
    assert_fitted(page)


def test_preview_form_preview_and_rendered_body_are_inert(
    page: Any, beacon: Beacon, ip: TestingShell, smtp_server: CaptureServer
) -> None:
    from smtp_magic.render import render_template
    from smtp_magic.widgets import compose

    config.current().update({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                             "sender": "me@example.test"})
    ip.user_ns["fig"] = fig = red_figure()
    ip.user_ns["hostile_html"] = hostile(beacon.url)
    try:
        with capture_output() as captured:
            ip.run_cell("%%smtp_send --to you@example.test --subject Draft --preview\n"
                        + hostile(beacon.url) + "\n{{ fig }}")
        preview = captured.outputs[0].data["text/html"]

        form = compose(namespace={})
        form.to.value, form.subject.value = "you@example.test", "From the form"
        form.content_type.value = "text/html"
        form.body.value = hostile(beacon.url)
        form.preview_button.click()
        form_preview = form.preview.value
        form.close()

        rendered = render_template(hostile(beacon.url) + "\n{{ fig }}", {"fig": fig}, "text/html")
        rendered_html = rendered._repr_html_()
    finally:
        plt.close(fig)
    assert smtp_server.count() == 0

    for name, html in (("--preview", preview), ("form", form_preview),
                       ("Rendered", rendered_html)):
        show(page, html)
        assert_inert(page, beacon)
        if name != "form":
            assert_red_image_visible(page)
        assert_fitted(page)


# -- remote content: nothing loads unless the reader asks for remote images ---------------------

PREFIXES = {
    "comment": "<!-- <head> <html> -->",
    "title": "<title><head></title>",
    "attribute": "<div title='<head>'>x</div>",
    "doctype": "<!DOCTYPE html><html><head>",
}


def remote(url: str) -> str:
    """Markup that loads from ``url`` without any script: every path names its trick."""
    return (
        f"<link rel='stylesheet' href='{url}/link.css'>"
        f"<link rel='prefetch' href='{url}/prefetch'><link rel='icon' href='{url}/icon.png'>"
        f"<meta http-equiv='refresh' content='0;url={url}/refresh'>"
        f"<base href='{url}/base/'>"
        f"<style>@import url({url}/import.css); @font-face{{font-family:f;"
        f"src:url({url}/font.woff)}} body{{font-family:f;background:url({url}/body-bg.png)}}"
        "</style></head><body>"
        f"<p>Hello</p><img src='{url}/pixel.png' width='1' height='1'>"
        f"<div style='background-image:url({url}/div-bg.png);width:10px;height:10px'></div>"
        f"<iframe src='{url}/iframe'></iframe><audio src='{url}/audio' autoplay></audio>"
        f"<video src='{url}/video' autoplay></video>"
        f"<object data='{url}/object'></object><embed src='{url}/embed'>"
        f"<img src='relative.png'>"
        "<p><a id='js' href='#'>a link</a></p>"
    )


def test_a_captured_message_loads_nothing_remote_until_asked(
    page: Any, beacon: Beacon, ip: TestingShell, smtp_server: CaptureServer
) -> None:
    for name, prefix in PREFIXES.items():
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "m@attacker.test", "you@example.test", name
        msg.set_content("text version")
        msg.add_alternative(prefix + remote(beacon.url), subtype="html")
        with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
            client.send_message(msg)
    smtp_server.wait_for(len(PREFIXES))

    with capture_output() as captured:
        ip.run_cell("%smtp_inbox")
    html = captured.outputs[0].data["text/html"]
    show(page, html)
    assert page.locator("iframe").count() == len(PREFIXES)
    assert beacon.settle(1.0) == [], f"a view of a message fetched: {beacon.hits}"
    assert "Remote images are not loaded" in html  # and the reader is told

    # With the reader's choice, images load: nothing else does.
    with capture_output() as captured:
        ip.run_cell("%smtp_inbox --remote-images")
    show(page, captured.outputs[0].data["text/html"])
    hits = beacon.settle(1.0)
    assert "/pixel.png" in hits, hits
    images = {"/pixel.png", "/div-bg.png", "/body-bg.png"}
    assert set(hits) <= images, f"more than images loaded: {set(hits) - images}"


def test_previews_load_no_remote_image_of_the_users_own_markup(
    page: Any, beacon: Beacon, ip: TestingShell, smtp_server: CaptureServer
) -> None:
    from smtp_magic.render import render_template

    config.current().update({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                             "sender": "me@example.test"})
    body = f"<!-- <head> --><p>Logo</p><img src='{beacon.url}/logo.png'>"
    with capture_output() as captured:
        ip.run_cell(f"%%smtp_send --to you@example.test --subject Draft --preview\n{body}")
    for html in (captured.outputs[0].data["text/html"],
                 render_template(body, {}, "text/html")._repr_html_()):
        show(page, html)
        assert beacon.settle(1.0) == [], beacon.hits
    assert smtp_server.count() == 0
