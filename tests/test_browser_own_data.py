"""OwnDataPanel in a real browser: JupyterLab 4 and Chromium, driven by Playwright.

The notebook opens the panel with two empty classes. The test uploads 12
photos into each through the panels' actual file inputs (several files in one
dialog), waits for the counts, presses **train** and reads the accuracy the
page shows. Needs what tests/test_browser_widgets.py needs; skips otherwise.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser.jupyter_lab import CHROMIUM, CHROMIUM_ARGS, REPO, jupyter_server, write_notebook
from imagegen import COLOURS, write_image
from test_browser_widgets import SKIP_NO_CHROMIUM, _artifacts_dir, _wait_for_kernel

pytestmark = pytest.mark.browser

CELL = """import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import torch
torch.set_num_threads(1)
from tlkit.backbones import load_backbone
from widgets import OwnDataPanel

def small_model():
    torch.manual_seed(0)
    return load_backbone("resnet18", pretrained=False)

own = OwnDataPanel({folder!r}, backbone=small_model, image_size=32)
own.add_class("cats")
own.add_class("dogs")
own"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=SKIP_NO_CHROMIUM)
def test_browser_own_data_panel_upload_train_accuracy(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="setup incomplete: pip install -e '.[dev]' (it brings playwright)")
    expect = sync_api.expect
    photos = {cls: [write_image(tmp_path / "photos" / cls / f"{cls}_{i}.jpg", COLOURS[cls], 40, seed=10 * j + i)
                    for i in range(12)] for j, cls in enumerate(("cats", "dogs"))}
    root = tmp_path / "lab"
    root.mkdir()
    nb = write_notebook(root / "own_data.ipynb", [CELL.format(repo=str(REPO), tests=str(REPO / "tests"),
                                                              folder=str(tmp_path / "own"))])
    shot = _artifacts_dir(tmp_path) / "browser_own_data.png"
    expect.set_options(timeout=30_000)
    with jupyter_server(root, "lab") as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(60_000)
            page.goto(url + nb.name)
            page.wait_for_selector(".jp-Notebook .jp-Cell", state="visible")
            _wait_for_kernel(page, "lab")
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            for cls, files in photos.items():
                button = page.locator(".widget-upload", has_text=f"photos of {cls}")
                expect(button).to_be_visible(timeout=90_000)
                with page.expect_file_chooser() as chooser:
                    button.click()
                chooser.value.set_files([str(f) for f in files])
                expect(page.locator(".widget-html", has_text=f"{cls}: 12 photos")).to_be_visible()
            page.locator(".widget-button", has_text="train").click()
            done = page.locator(".widget-label", has_text=re.compile(r"^Done in .* accuracy \d+%"))
            expect(done).to_be_visible(timeout=120_000)
            accuracy = int(re.search(r"accuracy (\d+)%", done.inner_text()).group(1))
            assert accuracy >= 90, done.inner_text()
            assert len(list((tmp_path / "own" / "cats").glob("*.jpg"))) == 12  # on disk, in the class folder
            page.screenshot(path=str(shot), full_page=True)
        except Exception:
            page.screenshot(path=str(shot.with_name("browser_own_data_failure.png")), full_page=True)
            raise
        finally:
            browser.close()
