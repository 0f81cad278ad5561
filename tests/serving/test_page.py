"""The page at / in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium): it lists the
served models with their cards and the server's provider/precision choice, runs an uploaded image and the built-in
example through the HTTP image API, and what it shows is byte for byte the gRPC answer for the same input. It loads
nothing from anywhere but the server, shows errors as the server words them, and asks for a token when the server
needs one.

Skipped where Chromium is missing, unless GANSERVE_REQUIRE_BROWSER=1 (.ci/run sets it and installs the packages)."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from ganserve.serving.proto.ganserve.v1 import images_pb2, images_pb2_grpc
from ganserve.serving.server import ServerThread
from local_server import server_config
from serving_models import make_repo
from test_imaging import png_bytes

TOKEN = "page-test-token-0123456789"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000")


def _browser_or_skip():
    found = all(Path(p).exists() for p in (CHROMIUM, DRIVER))
    try:
        from selenium import webdriver  # noqa: F401
    except ImportError:
        found = False
    if not found:
        if os.environ.get("GANSERVE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM}, {DRIVER} or selenium is missing (.ci/run installs chromium and chromium-driver)")
        pytest.skip("no Chromium here (apt-get install chromium chromium-driver); .ci/run installs it")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(driver.capabilities.get("chrome", {}).get("userDataDir", "") or "/nonexistent", True)


METRICS = {"psnr_y": 30.2121, "bicubic_psnr_y": 28.7226, "ssim_y": 0.8673, "bicubic_ssim_y": 0.8319,
           "eval_images": 2.0, "quality_key": "psnr_y",
           "by_precision": {"fp32": {"psnr_y": 30.2121}, "int8": {"psnr_y": 30.2016}}}


@pytest.fixture(scope="module")
def page_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test repository with held-out metrics on sr2's card, laid out as `ganserve export` writes them."""
    repo = make_repo(tmp_path_factory.mktemp("page"))
    card_path = repo / "sr2" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["metrics"] = METRICS
    card_path.write_text(json.dumps(card))
    return repo


@pytest.fixture(scope="module")
def server(page_repo: Path):
    thread = ServerThread(server_config(page_repo))
    thread.start()
    yield thread
    thread.stop()


def _wait(driver, predicate, what: str, timeout: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: predicate(d), message=what)


def _open(driver, server, model: str | None = None) -> None:
    driver.get(f"http://127.0.0.1:{server.http_port}/" + (f"#model={model}" if model else ""))
    _wait(driver, lambda d: d.find_elements("css selector", "#models li[data-model]"), "the model list")
    if model:
        _wait(driver, lambda d: d.find_element("id", "model-name").text == model, f"{model}'s detail")


def _run(driver) -> dict:
    """Click Run and wait for that run to finish; the reply the page got (window.ganserveLast)."""
    runs = driver.execute_script("return window.ganserveRuns")
    driver.execute_script("window.ganserveLast = null")
    driver.find_element("id", "run").click()
    _wait(driver, lambda d: d.execute_script("return window.ganserveRuns") > runs, "the run to finish")
    return driver.execute_script("return window.ganserveLast")


def _images(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, images_pb2_grpc.ImagesStub(channel)


def _shown(driver, element_id: str) -> bytes:
    """The bytes behind an <img> the page shows (fetched back from its blob: URL inside the page)."""
    encoded = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(document.getElementById(arguments[0]).src).then(r => r.arrayBuffer()).then(b => {"
        "  let s = ''; const u = new Uint8Array(b); for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]);"
        "  done(btoa(s)); });", element_id)
    return base64.b64decode(encoded)


def test_the_list_shows_cards_choices_and_states(browser, server) -> None:
    _open(browser, server, "sr2")
    names = [li.get_attribute("data-model") for li in browser.find_elements("css selector", "#models li[data-model]")]
    assert names == ["aging", "broken", "digits", "sr2"]
    broken = browser.find_element("css selector", '#models li[data-model="broken"] .state')
    assert broken.text == "UNAVAILABLE"
    facts = browser.find_element("id", "facts").text
    _, served = server.server.models.get("sr2")
    provider = served.choice.candidate.provider.replace("ExecutionProvider", "")
    assert "super_resolution" in facts and f"{provider} / {served.choice.candidate.precision}" in facts
    assert "POST /v1/models/sr2/transform" in facts
    chosen = browser.find_elements("css selector", "#candidates tr.status-chosen")
    assert len(chosen) == 1 and served.choice.candidate.precision in chosen[0].text
    rows = {row.get_attribute("data-metric"): [td.text for td in row.find_elements("css selector", "td")]
            for row in browser.find_elements("css selector", "#metrics tbody tr")}
    assert set(rows) == {"psnr_y", "ssim_y", "eval_images"}  # each baseline sits beside its metric, not as a row
    assert rows["psnr_y"] == ["psnr_yquality", "30.212", "28.723", "bicubic_psnr_y"]
    assert rows["ssim_y"][1:] == ["0.867", "0.832", "bicubic_ssim_y"] and rows["eval_images"][2:] == ["", ""]
    assert browser.find_element("css selector", 'details[data-metric="by_precision"]')
    browser.find_element("css selector", '#models li[data-model="broken"] a').click()
    _wait(browser, lambda d: d.find_element("id", "model-name").text == "broken", "the broken model's detail")
    assert browser.find_element("id", "model-reason").text  # why it is not served, as the server says
    assert not browser.find_elements("id", "run")


def test_upload_runs_and_equals_the_grpc_answer(browser, server, tmp_path: Path) -> None:
    picture = png_bytes(np.random.default_rng(3).integers(0, 256, (20, 28, 3), dtype=np.uint8))
    upload = tmp_path / "photo.png"
    upload.write_bytes(picture)
    _open(browser, server, "sr2")
    browser.find_element("id", "image-file").send_keys(str(upload))
    _wait(browser, lambda d: d.find_element("id", "input-preview").is_displayed(), "the input preview")
    assert "28×20" in browser.find_element("id", "input-size").text
    last = _run(browser)
    channel, images = _images(server)
    with channel:
        expected = images.Transform(images_pb2.TransformRequest(model="sr2", image=picture), timeout=10)
    assert last and last["ok"] and last["status"] == 200
    assert base64.b64decode(last["base64"]) == expected.image
    assert _shown(browser, "output") == expected.image  # what the <img> shows is that answer
    assert browser.find_element("id", "output").get_property("naturalWidth") == 56
    assert "56×40 PNG" in browser.find_element("id", "output-size").text
    assert float(browser.find_element("id", "timing-total").text) > 0
    assert browser.find_element("id", "timing-runs").text == str(expected.tiles)


def test_built_in_example_with_tiles_and_jpeg(browser, server) -> None:
    _open(browser, server, "sr2")
    browser.find_element("id", "example").click()
    _wait(browser, lambda d: d.find_element("id", "input-preview").is_displayed(), "the example's preview")
    example = _shown(browser, "input-preview")
    assert "8×8" in browser.find_element("id", "input-size").text  # sr2's reference input
    browser.find_element("id", "tile-size").send_keys("4")
    browser.find_element("id", "tile-overlap").send_keys("0")
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element("id", "format")).select_by_value("jpeg")
    browser.find_element("id", "quality").send_keys("75")
    last = _run(browser)
    channel, images = _images(server)
    with channel:
        expected = images.Transform(images_pb2.TransformRequest(
            model="sr2", image=example, options=images_pb2.ImageOptions(
                tile_size=4, tile_overlap=0, output_format=images_pb2.JPEG, jpeg_quality=75)), timeout=10)
    assert last["contentType"] == "image/jpeg" and base64.b64decode(last["base64"]) == expected.image
    assert expected.tiles > 1 and last["runs"] == expected.tiles


def test_conditions_and_classify(browser, server, tmp_path: Path) -> None:
    picture = png_bytes(np.random.default_rng(5).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    upload = tmp_path / "face.png"
    upload.write_bytes(picture)
    from selenium.webdriver.support.ui import Select
    _open(browser, server, "aging")
    choices = [o.get_attribute("value") for o in browser.find_elements("css selector", "#cond-age option")]
    assert choices == ["young", "adult", "old"]
    Select(browser.find_element("id", "cond-age")).select_by_value("old")
    browser.find_element("id", "image-file").send_keys(str(upload))
    last = _run(browser)
    channel, images = _images(server)
    with channel:
        old = images.Transform(images_pb2.TransformRequest(model="aging", image=picture, conditions={"age": "old"}),
                               timeout=10)
        young = images.Transform(images_pb2.TransformRequest(model="aging", image=picture,
                                                             conditions={"age": "young"}), timeout=10)
        scores = images.Classify(images_pb2.ClassifyRequest(model="digits", image=picture, top_k=3), timeout=10)
    assert old.image != young.image and base64.b64decode(last["base64"]) == old.image

    _open(browser, server, "digits")
    browser.find_element("id", "image-file").send_keys(str(upload))
    last = _run(browser)
    rows = browser.find_elements("css selector", "#scores tbody tr")
    assert [r.get_attribute("data-label") for r in rows][:3] == [s.label for s in scores.scores]
    assert [s["probability"] for s in last["json"]["scores"][:3]] == pytest.approx(
        [s.probability for s in scores.scores], abs=1e-7)


def test_errors_are_shown_as_the_server_words_them(browser, server, tmp_path: Path) -> None:
    _open(browser, server, "sr2")
    last = _run(browser)  # nothing chosen yet: the page says so and sends nothing
    assert last is None and "choose an image first" in browser.find_element("id", "error").text
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"this is not an image at all")
    browser.find_element("id", "image-file").send_keys(str(junk))
    last = _run(browser)
    error = browser.find_element("id", "error")
    assert last is None and error.is_displayed() and error.text.startswith("HTTP 400")
    assert "image" in browser.find_element("id", "error-message").text.lower()
    browser.get(f"http://127.0.0.1:{server.http_port}/#model=nosuch")
    _wait(browser, lambda d: d.find_element("id", "error").is_displayed(), "the unknown-model message")
    assert 'no model named "nosuch"' in browser.find_element("id", "error").text


def test_nothing_is_loaded_from_elsewhere(browser, server) -> None:
    _open(browser, server, "sr2")
    browser.find_element("id", "example").click()
    _wait(browser, lambda d: d.find_element("id", "input-preview").is_displayed(), "the example's preview")
    _run(browser)
    origin = f"http://127.0.0.1:{server.http_port}"
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    loaded.append(browser.execute_script("return location.href"))
    assert loaded and all(url.startswith((origin, "blob:" + origin, "data:")) for url in loaded), loaded
    assert any(url.endswith("/static/page.js") for url in loaded) and any("/v1/models" in u for u in loaded)


@pytest.fixture(scope="module")
def token_server(page_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    tokens = tmp_path_factory.mktemp("page-tokens") / "tokens"
    tokens.write_text(TOKEN + "\n")
    thread = ServerThread(server_config(page_repo, auth_token_file=tokens))
    thread.start()
    yield thread
    thread.stop()


def test_token_prompt(browser, token_server, tmp_path: Path) -> None:
    browser.get(f"http://127.0.0.1:{token_server.http_port}/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"http://127.0.0.1:{token_server.http_port}/#model=sr2")
    _wait(browser, lambda d: d.find_element("id", "token-form").is_displayed(), "the token prompt")
    assert not browser.find_elements("css selector", "#models li[data-model]")  # nothing shown without a token
    browser.find_element("id", "token").send_keys("not-the-right-token-000")
    browser.find_element("id", "token-save").click()
    _wait(browser, lambda d: "refused" in d.find_element("id", "token-message").text, "the refusal")
    browser.find_element("id", "token").send_keys(TOKEN)
    browser.find_element("id", "token-save").click()
    _wait(browser, lambda d: d.find_elements("css selector", "#models li[data-model]"), "the model list")
    assert not browser.find_element("id", "token-form").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('ganserve.token')") == TOKEN
    picture = png_bytes(np.random.default_rng(9).integers(0, 256, (6, 6, 3), dtype=np.uint8))
    upload = tmp_path / "small.png"
    upload.write_bytes(picture)
    _wait(browser, lambda d: d.find_elements("id", "image-file"), "sr2's form")
    browser.find_element("id", "image-file").send_keys(str(upload))
    last = _run(browser)
    assert last and last["status"] == 200 and last["width"] == 12
    browser.find_element("id", "token-forget").click()
    _wait(browser, lambda d: d.find_element("id", "token-form").is_displayed(), "the prompt after forgetting")
    assert browser.execute_script("return sessionStorage.getItem('ganserve.token')") is None


def test_self_ensemble_control_for_tile_safe_models_only(browser, server) -> None:
    _open(browser, server, "aging")  # not tile-safe: no control
    assert not browser.find_elements("id", "ensemble")
    _open(browser, server, "sr2")
    browser.find_element("id", "example").click()
    _wait(browser, lambda d: d.find_element("id", "input-preview").is_displayed(), "the example's preview")
    example = _shown(browser, "input-preview")
    browser.find_element("id", "ensemble").click()
    last = _run(browser)
    channel, images = _images(server)
    with channel:
        expected = images.Transform(images_pb2.TransformRequest(
            model="sr2", image=example, options=images_pb2.ImageOptions(ensemble=8)), timeout=10)
    assert last["ok"] and base64.b64decode(last["base64"]) == expected.image
    assert expected.tiles == 8 and last["runs"] == 8
