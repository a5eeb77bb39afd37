"""What the browser tests share: Debian's Chromium through Playwright, and the dashboard run by `streamlit run` on a
free port until the test is done. They live in bench/browser.py, which `lamp bench dashboard` times the views with,
so the bench drives the pages exactly as the tests do."""

from bench.browser import CHROMIUM, IDLE, ROOT, launch_browser, settle, streamlit_app

__all__ = ["CHROMIUM", "IDLE", "ROOT", "launch_browser", "settle", "streamlit_app"]
