"""The playground page in a real headless browser: Debian's chromium, driven by Playwright (no browser download)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

from neo.infer.sampling import sample_texts
from tests.serve.conftest import Server

CHROMIUM = "/usr/bin/chromium"  # `nox -s tests` installs it with apt-get when missing
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(os.environ.get("NEO_TEST_ARTIFACTS", "test-artifacts"))


def test_playground_streams_a_completion_in_chromium(server: Server, loaded: Any) -> None:
    expected = sample_texts(loaded, ["hello"], max_new_tokens=24, temperature=0)[0]
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install -y chromium (nox -s tests does)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/?api_key={server.key}")
            assert page.locator("#model").inner_text() == server.model
            page.fill("#prompt", "hello")
            page.fill("#max_tokens", "24")
            page.fill("#temperature", "0")
            page.click("#generate")
            page.wait_for_selector("#status[data-done=true]", timeout=60_000)
            generated = page.locator("#generated").inner_text()
            status = page.locator("#status").inner_text()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)
        finally:
            browser.close()
    # the page counts the stream's events: 24 of them, one per token, each appended as it came
    assert generated == expected and status.startswith("24 tokens in") and "tokens/s" in status, status
    assert (ARTIFACTS / "playground.png").stat().st_size > 1000
