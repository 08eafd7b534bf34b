"""Every figure builds headless (Agg), has the expected parts, and leaves no pyplot figure open."""
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tlkit import viz  # noqa: E402
from tlkit.backbones import load_backbone  # noqa: E402
from tlkit.evaluate import Predictions  # noqa: E402
from tlkit.history import History  # noqa: E402

CLASSES = ["cats", "dogs"]


@pytest.fixture(autouse=True)
def no_open_figures():
    plt.close("all")
    yield
    assert plt.get_fignums() == []  # figures are detached from pyplot: no leaks in widgets


def _history(offset=0.0, epochs=3) -> History:
    h = History()
    for e in range(1, epochs + 1):
        h.append(epoch=e, train_loss=1 / e + offset, val_loss=1.2 / e + offset, train_acc=0.5 + e / 10,
                 val_acc=0.45 + e / 10, lr={"head": 1e-3})
    return h


def _images(tmp_path: Path, n=3, size=40) -> list[str]:
    paths = []
    for i in range(n):
        arr = np.full((size, size + 8, 3), (50 * i, 100, 200), dtype=np.uint8)
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(arr).save(paths[-1])
    return paths


def test_modules_do_not_import_matplotlib_at_import_time():
    code = "import sys, tlkit.viz, tlkit.evaluate; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_figures_never_go_through_pyplot():
    """Widgets draw in worker threads: pyplot's global state must not be involved at all."""
    code = ("import sys; from tlkit import viz; from tlkit.history import History\n"
            "h = History([{'epoch': 1, 'train_loss': 1.0, 'val_loss': 1.1, 'train_acc': .5, 'val_acc': .6}])\n"
            "png = viz.figure_to_png(viz.plot_history(h)) + viz.figure_to_png(viz.plot_lr_curves({1e-3: h}))\n"
            "sys.exit(0 if png.startswith(b'\\x89PNG') and 'matplotlib.pyplot' not in sys.modules else 1)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_plot_history_live_form_for_the_dashboard():
    """The dashboard's curves are plot_history too: running batch loss, axes fixed for the run."""
    fig = viz.plot_history(_history(epochs=2), batch_losses=[(0.5, 1.3), (1.0, float("nan")), (1.5, 0.7)],
                           total_epochs=5)
    loss, acc = fig.axes
    running = [line for line in loss.lines if line.get_label() == "train (running)"]
    assert len(running) == 1 and list(running[0].get_xdata()) == [0.5, 1.5]  # the NaN point is a gap
    assert loss.get_xlim() == (0, 5.2) and acc.get_ylim() == (0, 1.02)
    assert viz.figure_to_png(fig, dpi=50)[16:24] == (int(8.4 * 50)).to_bytes(4, "big") + (160).to_bytes(4, "big")


def test_plot_history_single_run_train_solid_val_dashed():
    fig = viz.plot_history(_history())
    assert len(fig.axes) == 2
    for ax, metric in zip(fig.axes, ("loss", "acc")):
        assert ax.get_ylabel() == metric
        styles = {line.get_label(): line.get_linestyle() for line in ax.lines}
        assert styles == {"train": "-", "val": "--"}
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1.0, 0.5, 1 / 3])
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), [1, 2, 3])


def test_plot_history_several_runs_one_colour_each():
    fig = viz.plot_history({"frozen": _history(), "fine-tuned": _history(0.1)}, metrics=("acc",))
    ax, = fig.axes
    assert len(ax.lines) == 4
    colours = [line.get_color() for line in ax.lines]
    assert colours[0] == colours[1] != colours[2] == colours[3]
    assert "frozen (val)" in [line.get_label() for line in ax.lines]


def test_plot_history_empty_and_unknown_metric():
    fig = viz.plot_history(History())  # before the first epoch (a widget's first frame)
    assert len(fig.axes) == 2 and all(not ax.lines for ax in fig.axes)
    with pytest.raises(KeyError, match="train_loss"):
        viz.plot_history(_history(), metrics=("f1",))
    assert len(viz.plot_history({"val_acc": [0.5, 0.7]}, metrics=("val_acc",)).axes[0].lines) == 1


def test_plot_confusion_matrix_writes_counts():
    cm = torch.tensor([[5, 1], [2, 7]])
    fig = viz.plot_confusion_matrix(cm, CLASSES)
    ax = fig.axes[0]
    assert len(ax.images) == 1 and len(fig.axes) == 2  # matrix + colour bar
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "5", "7"]
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    with pytest.raises(ValueError, match="len\\(classes\\)"):
        viz.plot_confusion_matrix(cm, ["a", "b", "c"])


def test_show_images_paths_pil_and_tensors(tmp_path):
    paths = _images(tmp_path)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    tensor = (torch.full((3, 8, 8), 0.75) - 0.5) / 0.25  # normalised image of 0.75 grey
    fig = viz.show_images([*paths, Image.open(paths[0]), tensor], titles=list("abcde"), ncols=4,
                          mean=mean, std=std)
    assert len(fig.axes) == 5 and all(len(ax.images) == 1 for ax in fig.axes)
    assert [ax.get_title() for ax in fig.axes] == list("abcde")
    np.testing.assert_allclose(fig.axes[4].images[0].get_array(), 0.75, atol=1e-6)
    batch = viz.show_images(torch.rand(6, 3, 8, 8), ncols=3)
    assert len(batch.axes) == 6
    with pytest.raises(ValueError, match="titles"):
        viz.show_images(paths, titles=["x"])
    with pytest.raises(ValueError, match="empty"):
        viz.show_images([])


def test_show_predictions_titles_and_mistakes_in_red(tmp_path):
    files = _images(tmp_path, n=3)
    preds = Predictions(torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]]), torch.tensor([0, 0, 1]),
                        files, CLASSES)
    fig = viz.show_predictions(preds, [0, 1])
    assert [ax.get_title() for ax in fig.axes] == ["cats / cats (0.90)", "cats / dogs (0.70)"]
    assert fig.axes[1].title.get_color() == "red" and fig.axes[0].title.get_color() == "black"
    top = viz.show_predictions(preds, k=2)  # default: the top losses, worst first
    assert top.axes[0].get_title() == "cats / dogs (0.70)" and len(top.axes) == 2


def test_show_grad_cam_overlay_matches_heatmap(tmp_path):
    heat = torch.rand(32, 32)
    fig = viz.show_grad_cam(torch.randn(3, 32, 32), heat, mean=(0.5,) * 3, std=(0.2,) * 3)
    assert len(fig.axes) == 2 and len(fig.axes[0].images) == 1 and len(fig.axes[1].images) == 2
    photo = viz.show_grad_cam(_images(tmp_path, n=1, size=60)[0], heat)  # 68x60 photo, cropped to 32x32
    assert photo.axes[1].images[0].get_array().shape[:2] == (32, 32)
    with pytest.raises(ValueError, match="heatmap"):
        viz.show_grad_cam(torch.rand(3, 8, 8), torch.rand(1, 8, 8))


def test_plot_lr_find_log_axis_and_suggestion():
    lrs = np.logspace(-6, 0, 20).tolist()
    result = SimpleNamespace(lrs=lrs, losses=np.linspace(2, 0.5, 20).tolist(), suggestion=1e-3)
    fig = viz.plot_lr_find(result)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.lines) == 2
    assert ax.lines[1].get_xdata()[0] == pytest.approx(1e-3)
    assert len(viz.plot_lr_find({"lrs": lrs, "losses": lrs, "suggestion": None}).axes[0].lines) == 1


def test_plot_lr_curves_one_line_per_lr():
    runs = {1e-4: _history(0.3), 1e-3: _history(0.1), 1e-2: _history(0.5)}
    fig = viz.plot_lr_curves(runs)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert [line.get_label() for line in ax.lines] == ["lr 1e-04", "lr 1e-03", "lr 1e-02"]
        assert len({line.get_color() for line in ax.lines}) == 3
        assert ax.get_legend() is None  # one legend for the figure, outside the axes
    legend, = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["lr 1e-04", "lr 1e-03", "lr 1e-02"]
    viz.figure_to_png(fig)  # lays it out
    box = legend.get_window_extent()
    assert all(box.x0 >= ax.get_window_extent().x1 for ax in fig.axes)  # right of every axis: covers no curve
    with pytest.raises(ValueError):
        viz.plot_lr_curves({})


def test_plot_lr_curves_neighbouring_rates_differ_in_colour_and_label():
    """Issue 24: 1e-3 and the slider's 1.7e-3 were one colour (a log colour scale) and both read "2e-03"."""
    runs = {1e-5: _history(0.3), 1e-3: _history(0.1), 1.7e-3: _history(0.2), 1e-1: _history(0.4), 1.0: _history(0.5)}
    ax = viz.plot_lr_curves(runs).axes[0]
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in ax.lines]
    assert len(set(colours)) == 5
    assert [line.get_label() for line in ax.lines][1:3] == ["lr 1e-03", "lr 1.7e-03"]
    assert viz.format_rate(0.0017) == "1.7e-03" and viz.format_rate(1.0) == "1e+00"


def test_plot_bar_one_bar_per_row():
    rows = [{"strategy": "frozen", "val_acc": 0.95}, {"strategy": "full", "val_acc": 0.97}]
    ax = viz.plot_bar(rows, "strategy", "val_acc").axes[0]
    assert [p.get_height() for p in ax.patches] == [0.95, 0.97]


def test_plot_filters_mosaic_of_first_conv():
    model = load_backbone("efficientnet_lite0", pretrained=False)
    fig = viz.plot_filters(model)
    ax, = fig.axes
    # 32 filters of 3x3 in 8 columns -> 4 rows, one pixel gaps
    assert ax.images[0].get_array().shape == (4 * 4 - 1, 8 * 4 - 1, 3)
    assert "32 filters, 3x3" in ax.get_title()


def test_plot_feature_maps_rows_per_group_and_state_restored():
    model = load_backbone("efficientnet_lite0", pretrained=False).train()
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    fig = viz.plot_feature_maps(model, torch.randn(3, 64, 64), groups=("stem", "stage2", "stage8"), channels=4)
    assert len(fig.axes) == 12 and all(len(ax.images) == 1 for ax in fig.axes)
    assert fig.axes[0].get_ylabel().startswith("stem\n32 ch, 32x32")
    assert model.training and sum(len(m._forward_hooks) for m in model.modules()) == hooks
    assert len(viz.plot_feature_maps(model, torch.randn(1, 3, 64, 64)).axes) == 4 * 6  # 4 default groups


def test_figure_to_png_returns_png_and_closes():
    fig = plt.figure()  # a pyplot-managed figure is closed too
    fig.add_subplot().plot([1, 2])
    png = viz.figure_to_png(fig, dpi=40)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 500
    assert plt.get_fignums() == []
    assert viz.figure_to_png(viz.plot_history(_history())).startswith(b"\x89PNG")


def test_one_colour_per_strategy_in_bars_and_curves():
    from matplotlib.colors import to_hex

    bar = viz.plot_bar([{"strategy": s, "val_acc": 0.9} for s in
                        ("feature extraction", "partial fine-tuning", "full fine-tuning")], "strategy", "val_acc")
    bar_colours = [to_hex(p.get_facecolor()) for p in bar.axes[0].patches]
    curves = viz.plot_history({"full fine-tuning": _history(), "partial fine-tuning": _history(0.1)},
                              metrics=("val_acc",))
    curve_colours = {line.get_label().split(" (")[0]: to_hex(line.get_color()) for line in curves.axes[0].lines}
    assert curve_colours["partial fine-tuning"] == bar_colours[1]  # same colour though it is the 2nd run here
    assert curve_colours["full fine-tuning"] == bar_colours[2]
    assert len(set(bar_colours)) == 3


def test_epoch_axes_have_integer_ticks_and_loss_spanning_decades_is_log():
    fig = viz.plot_history(_history(epochs=2))
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)  # never 1.5
    assert fig.axes[0].get_yscale() == "linear"  # 1.2 .. 0.5: no decade
    wide = {1e-3: _history(0.01), 1.0: _history(20.0)}  # val loss 0.5 .. 21
    fig = viz.plot_lr_curves(wide)
    acc_ax, loss_ax = fig.axes
    assert loss_ax.get_yscale() == "log" and "log" in loss_ax.get_ylabel()
    assert acc_ax.get_yscale() == "linear"


def test_plot_lr_curves_close_rates_get_distinct_colours():
    runs = {lr: _history() for lr in (1e-5, 1e-3, 2e-3, 1e-1, 1.0)}
    ax = viz.plot_lr_curves(runs).axes[0]
    assert len({tuple(line.get_color()) for line in ax.lines}) == 5


def test_plot_filters_title_says_pretrained_or_random():
    random_title = viz.plot_filters(load_backbone("efficientnet_lite0", pretrained=False)).axes[0].get_title()
    assert "random weights" in random_title and "pretrained" not in random_title
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))  # a model whose weights are named, none loaded
    model.name, model.weights = "tiny", "imagenet"
    assert "pretrained (imagenet)" in viz.plot_filters(model).axes[0].get_title()
    assert viz.plot_filters(model, title="mine").axes[0].get_title() == "mine"


def test_plot_bar_draws_interval_error_bars():
    rows = [{"strategy": "feature extraction", "val_acc": 0.9, "ci": (0.85, 0.93)},
            {"strategy": "full fine-tuning", "val_acc": 0.95, "ci": (0.92, 0.97)}]
    ax = viz.plot_bar(rows, "strategy", "val_acc", interval="ci").axes[0]
    caps = [line for line in ax.lines if len(line.get_ydata()) == 2]   # the error bars' cap markers
    lows_highs = sorted(round(float(v), 3) for line in caps for v in line.get_ydata())
    assert lows_highs == [0.85, 0.92, 0.93, 0.97]
    assert [p.get_facecolor()[:3] for p in ax.patches][0] != [p.get_facecolor()[:3] for p in ax.patches][1]


def test_plot_freeze_state_is_one_coloured_row_per_group():
    rows = [{"group": "stem", "trainable": False, "params": 928, "bn_mode": "eval"},
            {"group": "head", "trainable": True, "params": 2562, "bn_mode": "none", "state": "trainable"}]
    fig = viz.plot_freeze_state(rows, title="1 of 2 groups train")
    table = fig.axes[0].tables[0]
    cells = table.get_celld()
    assert [cells[(0, c)].get_text().get_text() for c in range(4)] == ["group", "state", "parameters",
                                                                        "BatchNorm in training"]
    assert [cells[(1, c)].get_text().get_text() for c in range(4)] == ["stem", "frozen", "928", "eval"]
    assert cells[(2, 2)].get_text().get_text() == "2,562"
    frozen, trainable = cells[(1, 0)].get_facecolor(), cells[(2, 0)].get_facecolor()
    assert frozen != trainable and trainable[1] > trainable[0]  # trainable rows are green
    assert fig.axes[0].get_title() == "1 of 2 groups train"
    assert viz.figure_to_png(fig).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="trainable_summary"):
        viz.plot_freeze_state([])
