"""Render a built report in headless Chromium and save it as PNGs a person can look at.

    python -m analysis.screenshot reports/demo/index.html /tmp/shots [--width 1400]

Writes `<out>/<name>.png` (the whole page, its height measured from the page's content) and
`<out>/<name>-NN.png`, the same page cut into screen-sized parts (`--part-height`, default
2800 px) that an image viewer shows at full size. Needs Pillow (PIL; matplotlib installs it,
else `pip install pillow`) and a Chromium binary (`chromium`, `chromium-browser` or
`google-chrome`; Debian: `apt-get install -y chromium`), or its path in `--chromium`; without
either it stops with one line saying which.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAX_HEIGHT = 30000  # px; taller pages are cut off there (and the log says so)


def _image():
    """PIL's Image module, imported when a screenshot is cut (a missing Pillow: one line)."""
    try:
        from PIL import Image
    except ImportError as e:
        raise RuntimeError("the screenshot tool needs Pillow (PIL): pip install pillow") from e
    return Image


def find_chromium(given: str | None = None) -> str:
    """The Chromium to use: `given`, or the first of BROWSERS on PATH."""
    for name in [given] if given else BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(
        f"no Chromium found (tried {given or ', '.join(BROWSERS)}); install one, e.g. "
        "`apt-get install -y chromium`, or pass --chromium PATH"
    )


def capture(html: Path, png: Path, width: int, height: int, chromium: str) -> None:
    """One headless screenshot of `html` in a width x height window."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-500:]}")


def content_height(png: Path) -> int:
    """Pixel rows down to the last one that is not blank white (+ a small margin)."""
    grey = np.asarray(_image().open(png).convert("L"))
    rows = np.flatnonzero(grey.min(axis=1) < 250)
    return int(rows.max()) + 40 if len(rows) else grey.shape[0]


def screenshot(
    html: Path,
    out_dir: Path,
    width: int = 1400,
    part_height: int = 2800,
    chromium: str | None = None,
) -> list[Path]:
    """Whole-page PNG and its parts; returns their paths (whole page first)."""
    image_module = _image()
    browser = find_chromium(chromium)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = html.parent.name if html.name == "index.html" else html.stem
    whole = out_dir / f"{name}.png"
    capture(html, whole, width, MAX_HEIGHT, browser)
    height = min(content_height(whole), MAX_HEIGHT)
    if height >= MAX_HEIGHT - 40:
        log.warning("%s is taller than %d px; the screenshot is cut there", html, MAX_HEIGHT)
    image = image_module.open(whole).crop((0, 0, width, height))
    image.save(whole)
    paths = [whole]
    for k, top in enumerate(range(0, height, part_height)):
        part = out_dir / f"{name}-{k + 1:02d}.png"
        image.crop((0, top, width, min(height, top + part_height))).save(part)
        paths.append(part)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html", type=Path, help="a report page, e.g. reports/demo/index.html")
    p.add_argument("out", type=Path, help="folder for the PNGs")
    p.add_argument("--width", type=int, default=1400, help="window width in px (default 1400)")
    p.add_argument("--part-height", type=int, default=2800, help="height of each part in px")
    p.add_argument("--chromium", default=None, help="path or name of the Chromium binary")
    args = p.parse_args(argv)
    if not args.html.is_file():
        raise SystemExit(f"no report page at {args.html}; build one with `odyssey report STUDY`")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = screenshot(args.html, args.out, args.width, args.part_height, args.chromium)
    except (FileNotFoundError, RuntimeError) as e:
        raise SystemExit(f"screenshot: {e}") from None
    for path in paths:
        log.info("%s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
