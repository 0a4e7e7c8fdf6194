"""A PNG of a results page as headless Chromium draws it (the README's picture of the demo's page).

    python scripts/screenshot_report.py --page runs/.../report.html --output docs/report_demo.png \\
        [--sort semantic_entropy] [--question ID] [--size 1600x1000]

Opens the page from its file:// URL, sorts the table by --sort (most uncertain first), selects
--question (default: the top one) and saves the window, reduced to 256 colours to keep the file small.
"""

from __future__ import annotations

import argparse
import io
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image

from semantic_entropy.browser.headless import HeadlessChromium

SELECT_TOP = """
document.querySelector('.vhead .cell[data-column="score:' + arguments[0] + '"]').click();
var table = document.getElementById('table');
table.scrollTop = 0; table.scrollLeft = 0;
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--page", required=True, help="the report.html to photograph")
    parser.add_argument("--output", required=True, help="the PNG to write")
    parser.add_argument("--sort", default="semantic_entropy", help="score whose most uncertain question is selected")
    parser.add_argument("--question", default=None, help="id of the question to select; None = the top row")
    parser.add_argument("--size", default="1600x1000", help="window size WIDTHxHEIGHT in CSS pixels")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    with HeadlessChromium(window=(width, height)) as browser:
        browser.open(pathlib.Path(args.page).resolve().as_uri())
        browser.wait_for("return window.reportTimings && window.reportTimings.ready")
        browser.execute(SELECT_TOP, args.sort)
        rows = browser.find_all(".vrow")
        chosen = [r for r in rows if args.question is None or browser.text(r).split()[0] == args.question]
        if not chosen:
            raise SystemExit(f"question {args.question} is not among the first rows of the sorted table")
        browser.click(chosen[0])
        browser.execute("document.getElementById('table').scrollLeft = 0")
        browser.wait_for("var c = document.getElementById('detail-canvas'); "
                         "return c && c.getAttribute('data-image') !== 'loading'")
        png = browser.screenshot()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256)
    image.save(args.output, optimize=True)
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 1e3:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
