"""The README's picture of the HTML report: opens a report written by ``finsae report`` in headless Chromium
and saves the top of the page as a PNG.

    python benchmarks/report_screenshot.py [--report results/report.html] [--out docs/report.png]
        [--width 1400] [--height 2200]

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium (the
``dev`` extra). Prints the browser's console errors, if any, and exits non-zero on one, so a broken report
is not photographed as if it were fine.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report", type=Path, default=Path("results/report.html"))
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2200)
    args = parser.parse_args()
    if not args.report.is_file():
        raise SystemExit(f"{args.report} does not exist: run make run (or finsae report) first")
    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver_path is None:
        raise SystemExit("needs chromium and chromedriver on PATH (Debian: apt-get install chromium "
                         "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={args.width},{args.height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.binary_location = browser
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.get(args.report.resolve().as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        if errors:
            for e in errors:
                print(f"console {e['level']}: {e['message']}")
            raise SystemExit(f"{args.report} logs console errors: not saved")
        title = driver.title
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(args.out)):
            raise SystemExit(f"chromium could not save a screenshot to {args.out}")
    finally:
        driver.quit()
    print(f"{args.report} ({title!r}) -> {args.out} ({args.width} x {args.height} px)")


if __name__ == "__main__":
    main()
