"""The widgets in a real browser: JupyterLab 4 and Notebook 7 with Chromium, driven by Playwright.

A notebook builds a tiny model, a TrainingDashboard, a FreezePanel and a
PredictPanel. For each front end the test runs all cells from the Run menu, then:

* clicks a layer-group toggle and checks that the trainable-parameter label
  changes on the page;
* presses Start, waits for the curves image to change and presses Stop;
* presses Start again the moment the button comes back (Playwright clicks as
  soon as it is enabled): a new run must start, not "Already training";
* picks a validation image, then uploads a text file: the error names that
  file (not a temporary path) and replaces the earlier result.

A second test opens a notebook executed by ``tools/make_notebooks.py`` (which
saves the widget state) without running anything: untrusted, the front end
shows ``VBox(children=...)`` text; trusted (``jupyter trust``, as ``make lab``
does), it draws the saved widgets.

Needs /usr/bin/chromium (Debian: ``apt-get install -y chromium``), the
``playwright`` Python package and Notebook 7 (all but Chromium come with
``pip install -e '.[dev]'``); skips with the reason otherwise. Screenshots go
to ``$TLKIT_ARTIFACTS`` when set, else to the test's tmp dir.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

from browser.jupyter_lab import (CHROMIUM, CHROMIUM_ARGS, KERNEL_DISPLAY_NAME, REPO, jupyter_server,
                                 trust_notebook, write_notebook)

pytestmark = pytest.mark.browser

CELLS = [
    # 0: setup (the kernel runs the project's .venv python; see browser/jupyter_lab.py)
    """import sys
sys.path[:0] = [{repo!r}, {tests!r}]
import torch
torch.set_num_threads(1)
from browser.tiny import tiny_backbone
from tlkit.data import image_folder
from widgets import FreezePanel, PredictPanel, TrainingDashboard
train, val = image_folder({data!r})
model = tiny_backbone()""",
    # 1: the dashboard (many epochs, so Stop has something to stop)
    """dash = TrainingDashboard(model, train, val, epochs=400, batch_size=8, lr=1e-2, refresh_interval=0.3,
                         image_size=32, seed=0, num_workers=0)
dash""",
    # 2: the freeze panel, linked to the dashboard
    """panel = FreezePanel(model, dashboard=dash)
panel""",
    # 3: the predict panel on the validation images
    """predict = PredictPanel(model, val_dataset=val, topk=2)
predict""",
]
BAD_UPLOAD = "my_notes.txt"
SKIP_NO_CHROMIUM = (f"setup incomplete: {CHROMIUM} is absent. Install Chromium for the real-browser test: "
                    "sudo apt-get install -y chromium (Debian/Ubuntu), see README, Development")


def _artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TLKIT_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait_for_kernel(page, app: str) -> None:
    """Until our kernel is connected and idle. Running cells before that opens a
    "Select Kernel" dialog (the front end thinks the notebook has no kernel yet)."""
    if app == "lab":
        status = page.locator(".jp-StatusBar-TextItem", has_text=f"{KERNEL_DISPLAY_NAME} | Idle")
        status.wait_for(state="visible", timeout=90_000)
        return
    # Notebook 7 has no status bar: the toolbar names the kernel and its indicator turns idle.
    page.locator(".jp-Toolbar-kernelName", has_text=KERNEL_DISPLAY_NAME).wait_for(state="visible", timeout=90_000)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(state="attached", timeout=90_000)


def _run_all_cells(page, app: str) -> None:
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
        _wait_for_kernel(page, app)
    raise AssertionError(f"{app} kept asking for a kernel")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=SKIP_NO_CHROMIUM)
@pytest.mark.parametrize("app", ["lab", "notebook"], ids=["jupyterlab4", "notebook7"])
def test_browser_widgets(app, tiny_images, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="setup incomplete: pip install -e '.[dev]' (it brings playwright)")
    if app == "notebook" and importlib.util.find_spec("notebook") is None:
        pytest.skip("setup incomplete: Notebook 7 is not installed: pip install -e '.[dev]' (it brings notebook>=7)")
    root = tmp_path / app
    root.mkdir()
    nb = write_notebook(root / "widgets_test.ipynb", [
        c.format(repo=str(REPO), tests=str(REPO / "tests"), data=str(tiny_images)) for c in CELLS])
    shot = _artifacts_dir(tmp_path) / f"browser_widgets_{app}.png"
    sync_api.expect.set_options(timeout=20_000)  # a busy 2-core machine can take seconds per round trip
    with jupyter_server(root, app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.set_default_timeout(60_000)
            page.goto(url + nb.name)
            page.wait_for_selector(".jp-Notebook .jp-Cell", state="visible")
            _wait_for_kernel(page, app)
            _run_all_cells(page, app)
            _check_freeze_panel(page, sync_api.expect)
            _check_dashboard(page, sync_api.expect)
            _check_predict_panel(page, sync_api.expect, tmp_path)
            page.screenshot(path=str(shot), full_page=True)
        except Exception:
            page.screenshot(path=str(shot.with_name(f"browser_widgets_{app}_failure.png")), full_page=True)
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
    start = page.locator(".widget-button", has_text="Start")
    stop = page.locator(".widget-button", has_text="Stop")
    start.click()
    expect(plot).not_to_have_attribute("src", src_before)  # new curves arrived from the thread
    # A few epochs, so the curves (and the screenshot) show something.
    third_epoch = page.locator(".widget-label", has_text=re.compile(r"^epoch ([3-9]|\d{2,})/400 \|"))
    expect(third_epoch).to_be_visible()
    stop.click()
    # Start again at the first moment the page lets us (click() waits until the button is
    # enabled): the run that just ended must not swallow the click.
    start.click()
    new_run = page.locator(".widget-label", has_text=re.compile(r"^(Starting: 400 epoch|epoch [12]/400 \|)"))
    expect(new_run).to_be_visible()  # the stopped run had passed epoch 2: this is a new one
    expect(page.locator(".widget-label", has_text="Already training")).to_have_count(0)
    second_epoch = page.locator(".widget-label", has_text=re.compile(r"^epoch ([2-9]|\d{2,})/400 \|"))
    expect(second_epoch).to_be_visible()
    stop.click()
    stopped = page.locator(".widget-label", has_text=re.compile(r"^Stopped after ([1-9]|\d{2,}) epoch"))
    expect(stopped).to_be_visible()


def _check_predict_panel(page, expect, tmp_path: Path) -> None:
    pick = page.locator(".widget-dropdown", has_text="or pick").locator("select")
    pick.scroll_into_view_if_needed()
    pick.select_option(index=1)  # the first validation image
    result = page.locator(".widget-html", has_text="true class")
    expect(result).to_be_visible()
    expect(result).to_contain_text("%")
    panel = page.locator(".jp-OutputArea-output", has=page.locator(".widget-upload"))
    pictures = panel.locator(".widget-image")
    old_pictures = _sources(pictures) - {None, ""}
    assert old_pictures, "the picked photo and its Grad-CAM are shown"
    bad = tmp_path / BAD_UPLOAD
    bad.write_text("not a photo\n")
    # The upload button opens a file dialog from an input that is not in the page: answer the dialog.
    with page.expect_file_chooser() as chooser:
        page.locator(".widget-upload", has_text="Upload photo").click()
    chooser.value.set_files(str(bad))
    error = page.locator(".widget-html", has_text="Error:")
    expect(error).to_contain_text(BAD_UPLOAD)
    text = error.inner_text()
    assert not re.search(r"tlkit-upload|/tmp/|upload\.txt", text), text  # the user's name, not a temp copy's
    expect(result).to_have_count(0)  # the error replaced the earlier result: no bars ...
    for _ in range(40):  # the panel's widgets update one message at a time: allow a few seconds
        still = _sources(pictures) & old_pictures
        if not still:
            break
        page.wait_for_timeout(250)
    assert not still, "the photo or Grad-CAM of the earlier result is still shown next to the error"
    # ... no photo, and the dropdown no longer names the picked image as the one shown.
    shown = pick.evaluate("el => el.selectedIndex < 0 ? '' : el.options[el.selectedIndex].text")
    assert shown in ("", "(pick a validation image)"), shown


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=SKIP_NO_CHROMIUM)
@pytest.mark.parametrize("app", ["lab", "notebook"], ids=["jupyterlab4", "notebook7"])
def test_saved_widget_state_is_drawn_in_a_trusted_notebook_before_anything_runs(app, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="setup incomplete: pip install -e '.[dev]' (it brings playwright)")
    if app == "notebook" and importlib.util.find_spec("notebook") is None:
        pytest.skip("setup incomplete: Notebook 7 is not installed: pip install -e '.[dev]' (it brings notebook>=7)")
    import nbformat
    spec = importlib.util.spec_from_file_location("make_notebooks", REPO / "tools" / "make_notebooks.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": mk.KERNELSPEC})
    nb.cells = [nbformat.v4.new_code_cell(
        "import ipywidgets as w\nw.VBox([w.Label('best val_acc 0.991'), w.IntSlider(value=7)])")]
    mk.execute(nb, fast=True, timeout=120)  # as make notebooks runs the course
    root = tmp_path / app
    root.mkdir()
    nbformat.write(nb, root / "saved.ipynb")
    with jupyter_server(root, app) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url + "saved.ipynb")
            output = page.locator(".jp-OutputArea-output").first
            sync_api.expect(output).to_contain_text("VBox(children=", timeout=60_000)  # untrusted: text only
            trust_notebook(root / "saved.ipynb", root)
            page.reload()
            label = page.locator(".widget-label", has_text="best val_acc 0.991")
            sync_api.expect(label).to_be_visible(timeout=60_000)  # drawn from the saved state, no cell run
            sync_api.expect(page.locator(".widget-slider .widget-readout")).to_have_text("7")
        except Exception:
            page.screenshot(path=str(_artifacts_dir(tmp_path) / f"saved_state_{app}_failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def _sources(images) -> set[str | None]:
    return {images.nth(i).get_attribute("src") for i in range(images.count())}
