"""Screenshots of report.html with headless Chromium (Debian's `chromium` package), to check that the report
renders, not only that its HTML parses: `make report-screenshot` and tests/integration/test_report_html.py.

    python -m compressor.testing.chromium release/cpu-x86/report.html docs/report-html.png [WIDTH HEIGHT]

Chromium runs with a throwaway profile and everything that would reach the network switched off; the report
loads nothing from anywhere (compressor/release/html_report.py), so the screenshot is what a reader sees offline.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Chromium exits soon after it writes the screenshot; a hung browser is killed after this.
TIMEOUT_S = 180


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 2400) -> Path:
    """Render `html` in a `width` x `height` window and write what it shows to `png`."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)  # a stale file must not pass for this run's screenshot
    with tempfile.TemporaryDirectory(prefix="compressor-chromium-") as profile:
        command = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={width},{height}",
            Path(html).resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return png


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 4):
        print("usage: python -m compressor.testing.chromium REPORT.html OUT.png [WIDTH HEIGHT]", file=sys.stderr)
        return 2
    size = tuple(int(value) for value in argv[2:4]) or (1200, 2400)
    print(screenshot(Path(argv[0]), Path(argv[1]), *size))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
