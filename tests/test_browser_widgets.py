"""The widgets in a real browser: JupyterLab + Chromium, driven by Playwright.

A notebook builds a tiny model, a FreezePanel and a TrainingDashboard. The
test runs all cells from the Run menu, clicks a layer-group toggle and checks
that the trainable-parameter label changes on the page, then presses Start,
waits for the curves image to change, and presses Stop.

Needs /usr/bin/chromium (Debian: ``apt-get install -y chromium``) and the
``playwright`` Python package; skips with the reason otherwise. A screenshot
goes to ``$TLKIT_ARTIFACTS`` when set, else to the test's tmp dir.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from browser.jupyter_lab import CHROMIUM, CHROMIUM_ARGS, KERNEL_DISPLAY_NAME, REPO, jupyter_lab, write_notebook

pytestmark = pytest.mark.browser

CELLS = [
    # 0: setup (the kernel runs the project's .venv python; see browser/jupyter_lab.py)
    """import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import torch
torch.set_num_threads(1)
from browser.tiny import tiny_backbone
from tlkit.data import image_folder
from widgets import FreezePanel, TrainingDashboard
train, val = image_folder({data!r})
model = tiny_backbone()""",
    # 1: the dashboard (many epochs, so Stop has something to stop)
    """dash = TrainingDashboard(model, train, val, epochs=400, batch_size=8, lr=1e-2, refresh_interval=0.3,
                         image_size=32, seed=0, num_workers=0)
dash""",
    # 2: the freeze panel, linked to the dashboard
    """panel = FreezePanel(model, dashboard=dash)
panel""",
]


def _artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TLKIT_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait_for_kernel(page) -> None:
    """Until our kernel is connected and idle. Running cells before that opens a
    "Select Kernel" dialog (JupyterLab thinks the notebook has no kernel yet)."""
    kernel_status = page.locator(".jp-StatusBar-TextItem", has_text=f"{KERNEL_DISPLAY_NAME} | Idle")
    kernel_status.wait_for(state="visible", timeout=90_000)


def _run_all_cells(page) -> None:
    for _ in range(2):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        first = page.locator(".widget-toggle-button, .widget-image, .jp-Dialog").first
        first.wait_for(state="visible", timeout=90_000)
        dialog = page.locator(".jp-Dialog")
        if not dialog.is_visible():
            return
        # The kernel was still connecting after all: pick ours in the dialog and run again.
        dialog.locator("select").select_option(label=KERNEL_DISPLAY_NAME)
        dialog.locator("button", has_text="Select").click()
        _wait_for_kernel(page)
    raise AssertionError("JupyterLab kept asking for a kernel")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")
def test_browser_widgets_freeze_panel_and_dashboard(tiny_images, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    root = tmp_path / "lab"
    root.mkdir()
    nb = write_notebook(root / "widgets_test.ipynb", [
        c.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(tiny_images)) for c in CELLS])
    shot = _artifacts_dir(tmp_path) / "browser_widgets.png"
    with jupyter_lab(root) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(60_000)
            page.goto(f"{url}lab/tree/{nb.name}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", state="visible")
            _wait_for_kernel(page)
            _run_all_cells(page)
            _check_freeze_panel(page, sync_api.expect)
            _check_dashboard(page, sync_api.expect)
            page.screenshot(path=str(shot), full_page=True)
        except Exception:
            page.screenshot(path=str(shot.with_name("browser_widgets_failure.png")), full_page=True)
            raise
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def _check_freeze_panel(page, expect) -> None:
    stem = page.locator(".widget-toggle-button", has_text="stem")
    expect(stem).to_be_visible(timeout=90_000)  # cell outputs rendered by the widget manager
    totals = page.locator(".widget-label", has_text="% trainable")
    expect(totals).to_contain_text("100.0% trainable")
    before = totals.inner_text()
    stem.click()
    expect(totals).not_to_have_text(before)  # the kernel froze "stem" and sent the new totals back
    assert "frozen: 0 " not in totals.inner_text()
    expect(page.locator(".widget-label", has_text="frozen,").first).to_be_visible()


def _check_dashboard(page, expect) -> None:
    plot = page.locator(".widget-image").first
    expect(plot).to_be_visible()
    src_before = plot.get_attribute("src")
    page.locator(".widget-button", has_text="Start").click()
    expect(plot).not_to_have_attribute("src", src_before)  # new curves arrived from the thread
    # A few epochs, so the curves (and the screenshot) show something.
    third_epoch = page.locator(".widget-label", has_text=re.compile(r"^epoch ([3-9]|\d{2,})/400 \|"))
    expect(third_epoch).to_be_visible()
    page.locator(".widget-button", has_text="Stop").click()
    stopped = page.locator(".widget-label", has_text=re.compile(r"^Stopped after ([2-9]|\d{2,}) epoch"))
    expect(stopped).to_be_visible()
