"""A screenshot of the page at / for the README: a server on the demo's model repository, the shipped SR model run
on its built-in example in headless Chromium, the window saved as a PNG.

    make demo    # writes model-repository/
    .venv/bin/python -m ganserve.benchmarks.page_screenshot --repo model-repository --out docs/img/page.png

Needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) and selenium (the dev extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _driver(profile: Path, width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={width},{height}", "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=Path("model-repository"))
    p.add_argument("--model", default="srresnet")
    p.add_argument("--out", type=Path, default=Path("docs/img/page.png"))
    p.add_argument("--size", default="1280x1500", help="window WIDTHxHEIGHT (default 1280x1500)")
    args = p.parse_args(argv)
    if not (args.repo / args.model).is_dir():
        p.error(f"{args.repo / args.model} is missing: run `make demo` first")
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        p.error("needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
    width, height = (int(v) for v in args.size.lower().split("x"))

    from selenium.webdriver.support.ui import WebDriverWait

    from ganserve.serving.server import ServerConfig, ServerThread

    thread = ServerThread(ServerConfig(repo=args.repo, port=0, http_port=0, metrics_port=0, grace_seconds=5))
    thread.start()
    try:
        with tempfile.TemporaryDirectory() as profile:
            driver = _driver(Path(profile), width, height)
            try:
                driver.get(f"http://127.0.0.1:{thread.http_port}/#model={args.model}")
                wait = WebDriverWait(driver, 60, poll_frequency=0.1)
                wait.until(lambda d: d.find_elements("id", "example"), message="the model's form")
                driver.find_element("id", "example").click()
                wait.until(lambda d: d.find_element("id", "input-preview").is_displayed(), message="the example")
                for _ in range(2):  # the second run shows warm timings (the first also starts the decode threads)
                    runs = driver.execute_script("return window.ganserveRuns")
                    driver.find_element("id", "run").click()
                    wait.until(lambda d: d.execute_script("return window.ganserveRuns") > runs, message="the output")
                if not driver.execute_script("return window.ganserveLast"):
                    raise SystemExit("the page shows an error: " + driver.find_element("id", "error").text)
                wait.until(lambda d: d.find_element("id", "output").get_property("naturalWidth") > 0)
                # open the candidate table so the screenshot shows the server's provider/precision choice
                driver.execute_script("document.querySelectorAll('details.candidates').forEach(d => d.open = true)")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.out.with_name(args.out.name + ".part")
                tmp.write_bytes(driver.get_screenshot_as_png())
                tmp.replace(args.out)
            finally:
                driver.quit()
    finally:
        thread.stop()
    print(f"wrote {args.out} ({width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
