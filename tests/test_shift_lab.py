"""ShiftLab headless: set a shift and a severity, click Run, check the numbers, the grid and the model.

Runs under ipywidgets 8 (.venv) and 7.7.1 (.venv-ipyw7, tests/run_all.sh).
"""
from __future__ import annotations

import pytest
import torch

from tlkit.backbones import load_backbone
from widgets import ShiftLab
from widgets._base import PNG_MAGIC
from widgets.shift_lab import adabn_verdict, sample_grid_png

pytestmark = [pytest.mark.filterwarnings("ignore:The `ipykernel.comm.Comm` class has been deprecated:DeprecationWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def lab(tiny_datasets, lite0_64, tmp_path):
    _, val = tiny_datasets
    return ShiftLab(lite0_64, val, per_class=5, image_size=32, cache_dir=tmp_path, blocking=True, batch_size=4)


def test_click_shows_grid_and_accuracies_and_leaves_the_model_alone(lab, lite0_64):
    before_state = {k: v.clone() for k, v in lite0_64.state_dict().items()}
    lab.shift.value, lab.severity.value = "contrast", 5
    lab.run_button.click()
    assert lab.error is None, lab.log.outputs
    result = lab.results["contrast:5"]
    assert result["n"] == 10 and all(0 <= result[k] <= 1 for k in ("clean", "before", "after"))
    assert result["verdict"] == adabn_verdict(result["before"], result["after"], 10)
    assert bytes(lab.grid.value).startswith(PNG_MAGIC) and lab.grid.layout.width == "384px"  # 4 x 96 px
    assert "after AdaBN" in lab.table.value and "95% interval" in lab.table.value and "contrast:5" in lab.table.value
    assert lab.status.value.startswith("Done: contrast:5")
    assert all(torch.equal(v, lite0_64.state_dict()[k]) for k, v in before_state.items())  # a copy was adapted
    assert not lab.run_button.disabled and not lab.shift.disabled


def test_a_setting_seen_before_is_reused_and_gives_the_same_numbers(lab):
    lab.shift.value, lab.severity.value = "noise", 3
    first = lab.run()
    assert "noise:3" in lab._stats
    stats = {k: v.clone() for k, v in lab._stats["noise:3"].items()}
    again = lab.run()
    assert (again["before"], again["after"]) == (first["before"], first["after"])
    assert all(torch.equal(v, lab._stats["noise:3"][k]) for k, v in stats.items())
    assert any(k.endswith("running_var") for k in stats)
    lab.severity.value = 1
    assert lab.run()["shift"] == "noise:1" and set(lab.results) == {"noise:3", "noise:1"}


def test_a_shift_changes_the_adapted_statistics(lab):
    lab.shift.value, lab.severity.value = "dark", 5
    lab.run()
    lab.shift.value = "greyscale"
    lab.run()
    dark, grey = lab._stats["dark:5"], lab._stats["greyscale:5"]
    mean = next(k for k in dark if k.endswith("running_mean"))
    assert not torch.equal(dark[mean], grey[mean])


def test_stop_when_idle_and_errors_are_shown(lab, monkeypatch):
    assert lab.stop() is False and "Nothing to stop" in lab.status.value

    def broken(*a, **k):
        raise RuntimeError("no more memory")

    monkeypatch.setattr("widgets.shift_lab.adapted_copy", broken)
    with pytest.raises(RuntimeError):
        lab.run()
    assert "no more memory" in lab.error_box.value and not lab.run_button.disabled


def test_a_stop_request_ends_the_run_quietly(lab):
    lab._stop_event.set()
    lab._launch(lambda: lab._check_stop(), "x", blocking=False)  # the work sees the stop at its first check
    assert lab.join(30)
    assert isinstance(lab.error, InterruptedError) and lab.error_box.value == "" and "Stopped" in lab.status.value


def test_refuses_a_model_without_batchnorm(tiny_datasets):
    _, val = tiny_datasets
    with pytest.raises(ValueError, match="no BatchNorm"):
        ShiftLab(load_backbone("convnext_tiny", pretrained=False, num_classes=2), val)


def test_helpers():
    from PIL import Image
    png = sample_grid_png([Image.new("RGB", (50, 30), "red")] * 5, columns=4, side=20)
    assert png.startswith(PNG_MAGIC) and int.from_bytes(png[16:20], "big") == 80
    assert int.from_bytes(png[20:24], "big") == 40  # two rows
    assert adabn_verdict(0.6, 0.95, 200) == "helps" and adabn_verdict(0.95, 0.6, 200) == "hurts"
    assert adabn_verdict(0.90, 0.91, 200) == "no clear change"
    with pytest.raises(ValueError):
        sample_grid_png([])
