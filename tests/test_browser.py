"""The report form and the public view in a real browser: Debian's Chromium via Playwright.

The server is the real ``hydraissue serve`` in a subprocess on a free port with its own
data dir, so Playwright's sync API never meets pytest-asyncio's event loop. Without
/usr/bin/chromium these tests skip, unless HYDRAISSUE_REQUIRE_BROWSER=1 (CI), where a
missing browser is a failure. A browser is never downloaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ALL_PAYLOADS,
    IMG,
    JS_LINK,
    PHONE,
    SCREENSHOTS,
    SCRIPT,
    XSS_HOOKS,
    BrowserServer,
    make_png,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "controller.png"
    path.write_bytes(make_png())
    return path


def json_box(page: Any) -> None:
    """Open the custom fields and switch the rows to the JSON box (with script)."""
    if not page.locator("#custom_fields").is_visible():
        if not page.locator("details").first.evaluate("d => d.open"):
            page.locator("details summary").click()
        if page.locator("#cf-as-json").is_visible():
            page.locator("#cf-as-json").click()


def skip_native_checks(page: Any) -> None:
    """What a browser without constraint validation does: post an incomplete form, so
    the server's own checks answer."""
    page.evaluate("document.querySelector('form').noValidate = true")


def issue_id_of(url: str) -> int:
    match = re.search(r"/issues/(\d+)(?:\?reported=1)?$", url)
    assert match, f"not on an issue page: {url}"
    return int(match.group(1))


def wait_for_thumbnail(page: Any) -> int:
    """Scroll the (lazy) thumbnail into view and return its naturalWidth once loaded."""
    thumb = page.locator(".thumbs img").first
    thumb.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => { const i = document.querySelector('.thumbs img');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=5000,
    )
    width: int = thumb.evaluate("img => img.naturalWidth")
    return width


# -- 1. a phone, the whole way through -------------------------------------------------


def test_report_on_a_phone_with_attachment_and_custom_fields(
    server: BrowserServer, browser: Any, png_file: Path
) -> None:
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    try:
        page.goto(f"{server.url}/report?project=VR%20Arena")
        assert page.input_value("#project") == "VR Arena"
        # nothing overflows sideways on a phone
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        page.fill("#title", "Left controller drifts after ten minutes")
        page.fill(
            "#description",
            "Steps:\n\n1. Start **Arena** on head H-07\n2. Wait ten minutes\n\n"
            "The pointer slowly slides to the left.",
        )
        page.select_option("#category", "bug")
        page.fill("#reporter", "Ana K. (front desk)")
        page.set_input_files("#attachments", str(png_file))
        # the optional script lists the chosen file with its size
        assert "controller.png" in page.locator("#file-list").inner_text()
        json_box(page)
        page.fill("#custom_fields", '{"device": "Quest 3", "build": 812, "venue": "Hall B"}')
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "report-form.png"), full_page=True)

        with page.expect_navigation() as navigation:
            page.locator("button[type=submit]").click()
        assert navigation.value.status == 200
        issue_id = issue_id_of(page.url)

        assert page.locator("h1").inner_text() == "Left controller drifts after ten minutes"
        assert page.locator(".key").inner_text() == f"HYDRA-{issue_id}"
        assert page.locator(".md strong").inner_text() == "Arena"
        pairs = dict(
            zip(
                page.locator(".kv dt").all_inner_texts(),
                page.locator(".kv dd").all_inner_texts(),
                strict=True,
            )
        )
        assert pairs == {"device": "Quest 3", "build": "812", "venue": "Hall B"}
        badges = page.locator(".badge").all_inner_texts()
        assert "bug" in badges and "VR Arena" in badges and "open" in badges
        assert page.locator(".thumbs img").get_attribute("alt") == "controller.png"
        assert wait_for_thumbnail(page) == 96
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOTS / "public-view.png"), full_page=True)

        stored = server.api("GET", f"/issues/{issue_id}")
        assert stored["reporter"] == "Ana K. (front desk)"
        assert stored["custom_fields"] == {"device": "Quest 3", "build": 812, "venue": "Hall B"}
        assert stored["attachments"][0]["size"] == png_file.stat().st_size
    finally:
        context.close()


# -- 2. XSS in every field -------------------------------------------------------------


def open_watched(browser: Any, **options: Any) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(**options)
    context.add_init_script(XSS_HOOKS)
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return context, page, dialogs


def assert_nothing_ran(page: Any, dialogs: list[str]) -> None:
    page.wait_for_load_state("load")
    page.evaluate("() => Promise.all([...document.images].map(i => i.decode().catch(() => null)))")
    assert dialogs == []
    assert page.evaluate("window.__xss") is None, page.evaluate("window.__xssWhy")
    injected = page.evaluate(
        """() => [...document.querySelectorAll('*')].flatMap(el =>
              [...el.attributes].filter(a => a.name.startsWith('on')
                  || /^\\s*javascript:/i.test(a.value) && ['href', 'src'].includes(a.name))
              .map(a => el.tagName + ' ' + a.name + '=' + a.value))"""
    )
    assert injected == []
    scripts = page.evaluate("[...document.scripts].map(s => s.src || s.textContent)")
    assert all(s.endswith("/static/report.js") for s in scripts), scripts


def test_xss_payloads_in_every_field_never_run(
    server: BrowserServer, browser: Any, png_file: Path
) -> None:
    custom = {SCRIPT: IMG, IMG: JS_LINK, "link": "javascript:alert(1)"}
    context, page, dialogs = open_watched(browser, viewport=PHONE)
    try:
        page.goto(f"{server.url}/report?project={IMG}")
        assert_nothing_ran(page, dialogs)
        page.fill("#title", ALL_PAYLOADS)
        page.fill(
            "#description",
            f'{SCRIPT}\n\n{IMG}\n\n{JS_LINK}\n\n<a href="javascript:alert(1)">a</a>\n\n'
            '"><svg onload=alert(1)>',
        )
        page.fill("#project", ALL_PAYLOADS)
        page.fill("#reporter", ALL_PAYLOADS)
        json_box(page)
        page.fill("#custom_fields", json.dumps(custom))
        page.set_input_files(
            "#attachments",
            [
                {"name": f"{IMG}.png", "mimeType": "image/png", "buffer": png_file.read_bytes()},
                {"name": f"{IMG}.txt", "mimeType": "text/plain", "buffer": b"x"},
            ],
        )
        assert_nothing_ran(page, dialogs)  # the script's file list shows names as text
        with page.expect_navigation():
            page.locator("button[type=submit]").click()
        issue_id = issue_id_of(page.url)
        server.api(
            "POST",
            f"/issues/{issue_id}/comments",
            {"author": ALL_PAYLOADS, "text": f"{SCRIPT}\n\n{IMG}\n\n{JS_LINK}"},
        )
        page.reload()
        assert_nothing_ran(page, dialogs)
        # the payloads are there, as text
        assert page.locator("h1").inner_text() == ALL_PAYLOADS
        assert page.locator(".thumbs img").get_attribute("alt") == f"{IMG}.png"
        assert page.locator(".files a").inner_text() == f"{IMG}.txt"
        assert SCRIPT in page.locator(".kv").inner_text()
        assert JS_LINK in page.locator(".comment .md").inner_text()
        assert wait_for_thumbnail(page) == 96
    finally:
        context.close()

    # Without the page's CSP, so escaping alone is what stands between the payloads
    # and the browser.
    context, page, dialogs = open_watched(browser, viewport=PHONE, bypass_csp=True)
    try:
        page.goto(f"{server.url}/issues/{issue_id}")
        assert_nothing_ran(page, dialogs)
        page.goto(f"{server.url}/report?project={IMG}")
        assert_nothing_ran(page, dialogs)
        # the form returned with an error shows the payloads again, as values
        page.fill("#title", "")
        page.fill("#description", ALL_PAYLOADS)
        json_box(page)
        page.fill("#custom_fields", f"</textarea>{SCRIPT}")
        skip_native_checks(page)
        with page.expect_navigation() as navigation:
            page.locator("button[type=submit]").click()
        assert navigation.value.status == 400
        assert_nothing_ran(page, dialogs)
        assert page.input_value("#description") == ALL_PAYLOADS
        assert page.input_value("#project") == IMG
    finally:
        context.close()


# -- 3. no JavaScript ------------------------------------------------------------------


def test_the_form_works_without_javascript(
    server: BrowserServer, browser: Any, png_file: Path
) -> None:
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/report")
        page.fill("#title", "Sent without JavaScript")
        page.fill("#description", "Plain *HTML* form.")
        page.select_option("#category", "question")
        page.set_input_files("#attachments", str(png_file))
        assert page.locator("#file-list li").count() == 0  # the script really did not run
        page.locator("details summary").click()  # <details> opens without script
        page.fill("#custom_fields", '{"kiosk": "lobby"}')
        with page.expect_navigation() as navigation:
            page.locator("button[type=submit]").click()
        assert navigation.value.status == 200
        issue_id = issue_id_of(page.url)
        assert page.locator("h1").inner_text() == "Sent without JavaScript"
        assert page.locator(".key").inner_text() == f"HYDRA-{issue_id}"
        assert page.locator(".kv dd").inner_text() == "lobby"
        assert page.locator(".thumbs img").count() == 1
        assert page.locator(".md em").inner_text() == "HTML"
    finally:
        context.close()


# -- 4. invalid input ------------------------------------------------------------------


def test_an_invalid_report_comes_back_with_messages_and_values(
    server: BrowserServer, browser: Any
) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        before = len(server.api("GET", "/issues?limit=100"))
        page.goto(f"{server.url}/report")
        page.fill("#description", "Forgot the title")
        page.fill("#project", "Kiosk")
        page.select_option("#category", "feature")
        page.fill("#reporter", "Sam")
        json_box(page)
        page.fill("#custom_fields", '{"screen": "lobby"}')
        skip_native_checks(page)
        with page.expect_navigation() as navigation:
            page.locator("button[type=submit]").click()
        assert navigation.value.status == 400

        message = page.locator("#title-error")
        assert message.is_visible()
        assert message.inner_text() == "Please give the issue a short title."
        same_field = page.evaluate(
            "document.getElementById('title').closest('.field')"
            ".contains(document.getElementById('title-error'))"
        )
        assert same_field
        assert page.get_attribute("#title", "aria-invalid") == "true"
        assert page.locator("[role=alert]").is_visible()
        assert page.input_value("#description") == "Forgot the title"
        assert page.input_value("#project") == "Kiosk"
        assert page.input_value("#category") == "feature"
        assert page.input_value("#reporter") == "Sam"
        assert page.input_value("#custom_fields") == '{"screen": "lobby"}'
        # the section stays open, the field shown as a row
        assert page.locator(".cf-row .cf-key").input_value() == "screen"
        assert page.locator(".cf-row .cf-value").input_value() == "lobby"
        json_box(page)
        assert page.locator("#custom_fields").is_visible()
        # message beside the field is red, the others are not flagged
        assert page.locator(".field.invalid").count() == 1

        # now a title, but custom fields that are not an object
        page.fill("#title", "Lobby screen is black")
        page.fill("#custom_fields", '["lobby"]')
        with page.expect_navigation() as navigation:
            page.locator("button[type=submit]").click()
        assert navigation.value.status == 400
        error = page.locator("#custom-fields-error")
        assert error.is_visible() and "JSON object" in error.inner_text()
        assert page.input_value("#title") == "Lobby screen is black"
        assert page.locator("#title-error").count() == 0

        page.fill("#custom_fields", '{"screen": "lobby"}')
        with page.expect_navigation():
            page.locator("button[type=submit]").click()
        issue_id_of(page.url)
        assert len(server.api("GET", "/issues?limit=100")) == before + 1
    finally:
        context.close()


# -- 5. one report per submit, nothing lost --------------------------------------------


def count_issues(server: BrowserServer) -> int:
    return len(server.api("GET", "/issues?limit=1000"))


def test_a_double_tap_makes_one_issue(server: BrowserServer, browser: Any) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        before = count_issues(server)
        page.goto(f"{server.url}/report")
        page.fill("#title", "Tapped twice on a phone")
        with page.expect_navigation(url=re.compile(r"/issues/\d+")):
            page.locator("#send").dblclick()
        issue_id_of(page.url)
        assert count_issues(server) == before + 1
    finally:
        context.close()


def test_a_chosen_file_is_kept_after_an_error(
    server: BrowserServer, browser: Any, png_file: Path
) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/report")
        page.fill("#description", "The lobby screen flickers")
        page.set_input_files("#attachments", str(png_file))
        skip_native_checks(page)
        with page.expect_navigation() as navigation:
            page.locator("#send").click()
        assert navigation.value.status == 400
        kept = page.locator("#kept-files")
        assert "kept: controller.png" in kept.inner_text()
        assert page.input_value("#description") == "The lobby screen flickers"
        assert page.locator("#send").is_enabled()
        page.screenshot(path=str(SCREENSHOTS / "report-error.png"), full_page=True)
        page.fill("#title", "Lobby screen flickers")
        with page.expect_navigation(url=re.compile(r"/issues/\d+")):
            page.locator("#send").click()
        stored = server.api("GET", f"/issues/{issue_id_of(page.url)}")
        assert [a["name"] for a in stored["attachments"]] == ["controller.png"]
        assert stored["attachments"][0]["size"] == png_file.stat().st_size
    finally:
        context.close()


def test_a_429_shows_the_form_with_the_text_still_there(
    limited_server: BrowserServer, browser: Any
) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(f"{limited_server.url}/report")
        page.fill("#title", "First report")
        with page.expect_navigation(url=re.compile(r"/issues/\d+")):
            page.locator("#send").click()
        page.goto(f"{limited_server.url}/report")
        page.fill("#title", "Second report, too soon")
        page.fill("#description", "Typed on a phone in the sun")
        with page.expect_navigation() as navigation:
            page.locator("#send").click()
        assert navigation.value.status == 429
        assert page.locator("h1").inner_text() == "Please slow down"
        assert int(page.locator("#wait-seconds").inner_text()) >= 1
        assert page.input_value("#title") == "Second report, too soon"
        assert page.input_value("#description") == "Typed on a phone in the sun"
        assert page.locator("#send").is_enabled()
        page.screenshot(path=str(SCREENSHOTS / "report-429.png"), full_page=True)
        assert len(limited_server.api("GET", "/issues")) == 1
    finally:
        context.close()


def test_custom_fields_as_rows(server: BrowserServer, browser: Any) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/report")
        page.fill("#title", "Rows of custom fields")
        page.locator("details summary").click()
        assert not page.locator("#custom_fields").is_visible()  # rows instead of JSON
        page.locator(".cf-key").nth(0).fill("device")
        page.locator(".cf-value").nth(0).fill("Quest 3")
        page.locator("#cf-add").click()
        page.locator(".cf-key").nth(1).fill("")
        page.locator(".cf-value").nth(1).fill("no name")
        page.locator("#send").click()
        problem = page.locator("#cf-problem")
        assert problem.is_visible() and "Row 2" in problem.inner_text()
        page.locator(".cf-key").nth(1).fill("venue")
        page.locator(".cf-value").nth(1).fill("Hall “B”")
        with page.expect_navigation(url=re.compile(r"/issues/\d+")):
            page.locator("#send").click()
        stored = server.api("GET", f"/issues/{issue_id_of(page.url)}")
        assert stored["custom_fields"] == {"device": "Quest 3", "venue": "Hall “B”"}
    finally:
        context.close()


def contrast(a: str, b: str) -> float:
    def luminance(rgb: str) -> float:
        channels = [int(v) / 255 for v in re.findall(r"\d+", rgb)[:3]]
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_hydra_look_and_an_arabic_issue(
    server: BrowserServer, browser: Any, tmp_path: Path
) -> None:
    wide = tmp_path / "wide.png"
    wide.write_bytes(make_png(300, 200))  # 3:2
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    try:
        page.goto(f"{server.url}/report")
        style = page.evaluate(
            """() => {
              const css = (sel, prop) => getComputedStyle(document.querySelector(sel))[prop];
              return {
                bg: css('body', 'backgroundColor'), fg: css('body', 'color'),
                hydra: css('.brand-hydra', 'color'), issue: css('.brand-issue', 'color'),
                button: css('#send', 'backgroundColor'), buttonText: css('#send', 'color'),
                hint: css('.hint', 'color'), label: css('label', 'color'),
              };
            }"""
        )
        assert style["bg"] == "rgb(10, 10, 10)"
        assert style["hydra"] == "rgb(99, 102, 241)"
        assert style["issue"] == "rgb(255, 255, 255)"
        assert page.locator(".brand").text_content() == "HydraIssue"
        assert page.locator(".bar nav a").count() >= 1
        for text in ("fg", "hint", "label"):
            assert contrast(style[text], style["bg"]) >= 4.5, text
        assert contrast(style["buttonText"], style["button"]) >= 4.5
        assert contrast(style["hydra"], style["bg"]) >= 3  # large bold brand text
        for selector in ("#send", "#title", "#category", ".links a", "summary"):
            box = page.locator(selector).first.bounding_box()
            assert box is not None and box["height"] >= 48, selector

        page.fill("#title", "الشاشة لا تعمل في القاعة ب")
        page.fill("#description", "توقفت الشاشة بعد عشر دقائق.\n\nThe screen stopped.")
        page.fill("#project", "VR Arena")
        page.set_input_files("#attachments", str(wide))
        with page.expect_navigation(url=re.compile(r"/issues/\d+")):
            page.locator("#send").click()
        assert page.locator("h1").get_attribute("dir") == "auto"
        assert page.evaluate("getComputedStyle(document.querySelector('h1')).direction") == "rtl"
        assert page.locator("section.md").get_attribute("dir") == "auto"
        wait_for_thumbnail(page)
        box = page.locator(".thumbs img").bounding_box()
        assert box is not None and abs(box["width"] / box["height"] - 1.5) < 0.02
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SCREENSHOTS / "issue-arabic.png"), full_page=True)
    finally:
        context.close()
