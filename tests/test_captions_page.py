"""The captions page (`GET /demo`) in Debian's headless Chromium, driven by selenium.

The browser's microphone is Chromium's fake capture device playing an espeak-ng WAV, so the
page's real code path runs: getUserMedia -> ScriptProcessor -> 24 kHz pcm16 appends over the
realtime WebSocket (key as OpenAI's subprotocol) -> captions. The file panel uploads a WAV
through the transcription endpoint and offers SRT and VTT downloads.
`pytest --captions-screenshot docs/captions-page.png` refreshes the screenshot in the docs.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.fixtures.audio.speech import write_wav
from tests.fixtures.gateway import GATEWAY_API_KEY
from tests.fixtures.realtime import SpokenScript
from tests.fixtures.words import assert_words

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CAPTION_TIMEOUT_S = 240  # the first caption: page load, a sentence, its silence, the transcript


@pytest.fixture(scope="module")
def fake_microphone(realtime_script: SpokenScript, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script as a 48 kHz WAV (Chromium's capture rate), which the fake device loops."""
    folder = tmp_path_factory.mktemp("microphone")
    source = write_wav(folder / "script-16k.wav", realtime_script.samples_16k, 16000)
    out = folder / "script-48k.wav"
    subprocess.run(["sox", str(source), "-r", "48000", "-b", "16", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def browser(fake_microphone: Path) -> Iterator[WebDriver]:
    missing = [tool for tool in (CHROMIUM, CHROMEDRIVER) if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the page test needs {', '.join(missing)} (run `make sysdeps`)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,860",
                     "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={fake_microphone}",
                     "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _captions(driver: WebDriver) -> list[tuple[str, str]]:
    return [(line.find_element(By.CLASS_NAME, "time").text, line.find_element(By.CLASS_NAME, "text").text)
            for line in driver.find_elements(By.CSS_SELECTOR, "#captions .caption.final")]


def test_microphone_captions_then_a_file_with_srt_and_vtt(
    browser: WebDriver, gateway_server: str, utterances: list, realtime_script: SpokenScript,
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    """One page, both panels (the screenshot shows both): live captions, then a dropped file."""
    browser.get(f"{gateway_server}/")  # redirects to /demo
    assert browser.current_url.endswith("/demo")
    browser.find_element(By.ID, "api-key").send_keys(GATEWAY_API_KEY)
    browser.find_element(By.ID, "start").click()
    WebDriverWait(browser, CAPTION_TIMEOUT_S).until(lambda d: len(_captions(d)) >= 2)
    captions = _captions(browser)
    for time_range, text in captions:
        assert "–" in time_range and text  # "0:00.8–0:02.0" and the transcript (or "(no words)")
    # The fake microphone plays the script from its start: its sentences are the first captions.
    spoken = realtime_script.segments
    assert_words(" ".join(s.text for s in spoken), " ".join(text for _, text in captions[: len(spoken)]))
    status = browser.find_element(By.ID, "status").text
    assert not status.startswith(("Error", "Disconnected", "No microphone")), status
    browser.find_element(By.ID, "stop").click()
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "start").is_enabled())

    browser.find_element(By.ID, "file").send_keys(str(utterances[1].path))
    WebDriverWait(browser, CAPTION_TIMEOUT_S).until(
        lambda d: d.find_element(By.ID, "download-vtt").get_attribute("aria-disabled") == "false"
        or d.find_element(By.ID, "file-status").text.startswith("Failed"))
    assert not browser.find_element(By.ID, "file-status").text.startswith("Failed")
    assert_words(utterances[1].text, browser.find_element(By.ID, "transcript").text)
    subtitles = {}
    for name in ("srt", "vtt"):
        link = browser.find_element(By.ID, f"download-{name}")
        assert link.get_attribute("download").endswith(f".{name}")
        subtitles[name] = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0]).then((r) => r.text()).then(done);", link.get_attribute("href"))
    assert subtitles["vtt"].startswith("WEBVTT")
    assert "-->" in subtitles["srt"] and "," in subtitles["srt"].split("-->")[0]  # SRT's comma decimals

    shot = tmp_path / "captions-page.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    docs_copy = request.config.getoption("captions_screenshot")
    if docs_copy:
        shutil.copyfile(shot, docs_copy)
