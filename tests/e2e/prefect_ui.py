"""Open a paused flow run's Resume form in the Prefect UI (3.8.8) in headless Chromium, the way
a reviewer does, and measure whether its markdown fits.

The run page has a "Resume" button; it opens a modal (`.p-modal__body`, about 510 px wide) whose
description is rendered into `article.markdown-renderer`, tables inside
`div.markdown-renderer__table` (overflow: auto). Content that does not fit makes one of these
scroll sideways: its scrollWidth exceeds its clientWidth.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow_ui import CHROMEDRIVER, CHROMIUM, CHROMIUM_ARGS

# Every element of the form's markdown that would need a sideways scroll, and the markdown's
# own box; null until the modal shows the markdown.
_MEASURE_JS = r"""
const body = document.querySelector('.p-modal__body');
const md = body && body.querySelector('article.markdown-renderer');
if (!md || !md.innerText.includes(arguments[0])) return null;
const overflowing = [md, ...md.querySelectorAll('*')]
  .filter(el => el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
  .map(el => [el.tagName.toLowerCase() + '.' + el.className.split(' ')[0], el.scrollWidth, el.clientWidth]);
md.scrollIntoView({block: 'start'});
return {text: md.innerText, width: md.clientWidth, scroll_width: md.scrollWidth,
        modal_width: body.clientWidth, overflowing: overflowing};
"""


@dataclass(frozen=True)
class ResumeForm:
    """What the Resume form showed: its markdown's text, widths in CSS pixels, and the elements
    (tag.class, scrollWidth, clientWidth) that would scroll sideways."""

    url: str
    text: str
    width: int
    scroll_width: int
    modal_width: int
    overflowing: list[list]
    screenshot: Path


def read_resume_form(ui_base: str, flow_run_id: str, expect_text: str, screenshot: Path,
                     timeout: float = 90) -> ResumeForm:
    """Open the run page, press Resume, wait for the form's markdown (containing `expect_text`),
    screenshot it and measure it. Nothing is submitted."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="recloop-chromium-")
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    url = f"{ui_base.rstrip('/')}/runs/flow-run/{flow_run_id}"
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(url)
        resume = WebDriverWait(driver, timeout).until(
            lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Resume"), None))
        resume.click()
        found = WebDriverWait(driver, timeout).until(lambda d: d.execute_script(_MEASURE_JS, expect_text))
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return ResumeForm(url, found["text"], found["width"], found["scroll_width"], found["modal_width"],
                      found["overflowing"], screenshot)
