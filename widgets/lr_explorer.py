"""LRExplorer: what the learning rate does, tried live on cached features.

* **find LR** runs the learning-rate range test (``tlkit.lr_finder.lr_find``) on a
  head over the cached features and plots loss against rate, with the
  suggestion marked; the slider jumps to it.
* **compare** trains a fresh head at several rates (default 1e-5, 1e-3, 1e-1,
  1, plus the slider's) and overlays their validation curves, with a verdict
  per rate: too low, good or too high. On cached features this takes a few
  seconds on a CPU.
* **fine-tune test** (``mode="finetune"``, needs ``model`` and image data):
  fine-tunes the whole pretrained network briefly at the slider's rate and at
  a low rate, starting from the same weights. Too high a rate wipes out what
  the backbone knew: validation accuracy collapses towards chance.

Example:
    >>> lr = LRExplorer(train_feats, val_feats)
    >>> lr.compare(blocking=True)
    >>> lr.verdicts[1.0][0]
    'too high'
"""
from __future__ import annotations

import copy
import html
import math
from dataclasses import dataclass, field
from collections import OrderedDict
from typing import Sequence

import ipywidgets as W
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tlkit import viz
from tlkit.backbones import Backbone
from tlkit.data import subset, transforms_for
from tlkit.evaluate import predict
from tlkit.features import Features, train_head
from tlkit.freezing import freeze_to
from tlkit.heads import make_head
from tlkit.history import History
from tlkit.lr_finder import lr_find
from tlkit.train import fit
from widgets._base import ThreadedPanel, keep_global_rng
from widgets._plot import message_png, show_png
from widgets._snapshot import Snapshot, image_snapshot

MODES = ("features", "finetune")
SLIDER_STEP = 0.01  # in log10 units: neighbouring slider rates differ by 2.3%, so 1.7e-3 is not shown as 2e-3
VERDICT_COLOURS = {"too low": "#a0522d", "good": "#2e7d32", "too high": "#b00020"}


def lr_verdicts(runs: dict[float, History], tolerance: float = 0.02) -> dict[float, tuple[str, str]]:
    """``{lr: (verdict, reason)}`` with verdict "too low", "good" or "too high".

    A rate is good when its best validation accuracy is within ``tolerance``
    of the best run's and its final validation loss is close to the lowest
    one. Otherwise it is too low if it is below the best rate (it learns too
    slowly) and too high if above it (or if its loss blew up).

    Example:
        >>> lr_verdicts({1e-5: slow, 1e-3: fine, 1.0: wild})[1.0][0]
        'too high'
    """
    stats = {lr: _run_stats(h) for lr, h in runs.items()}
    ok = {lr: s for lr, s in stats.items() if s["stable"] and math.isfinite(s["acc"])}
    if not ok:
        return {lr: ("too high", "the loss became NaN or infinite") for lr in runs}
    top_acc = max(s["acc"] for s in ok.values())
    near_top = {lr: s for lr, s in ok.items() if s["acc"] >= top_acc - tolerance}
    best_lr = min(near_top, key=lambda lr: near_top[lr]["loss"])  # the lowest loss among the most accurate
    min_loss = near_top[best_lr]["loss"]
    return {lr: _verdict(lr, s, lr in near_top and s["loss"] <= 1.5 * min_loss + 0.02, best_lr)
            for lr, s in stats.items()}


def _run_stats(h: History) -> dict:
    """Best finite val accuracy, final val loss (inf if any loss blew up), and whether every loss is finite."""
    accs = [a for a in h["val_acc"] if isinstance(a, (int, float)) and math.isfinite(a)]
    losses = [v for v in h["train_loss"] + h["val_loss"] if v is not None]
    final_loss = h.last().get("val_loss") if len(h) else None
    stable = bool(losses) and all(math.isfinite(v) for v in losses)
    return {"acc": max(accs, default=float("nan")), "loss": final_loss if stable else float("inf"),
            "stable": stable}


def _verdict(lr: float, stats: dict, good: bool, best_lr: float) -> tuple[str, str]:
    """``(verdict, reason)`` for one rate, given its stats and the best rate."""
    summary = f"best val acc {stats['acc']:.3f}, final val loss {stats['loss']:.3f}"
    if good:
        return "good", summary
    if not stats["stable"]:
        return "too high", "the loss became NaN or infinite"
    if lr < best_lr:
        return "too low", summary + ": learns too slowly in this many epochs"
    return "too high", summary + ": the updates overshoot"


def head_model(num_features: int, num_classes: int, seed: int | None = None) -> Backbone:
    """A Backbone with no body: a head over pooled feature vectors ``(B, F) -> (B, C)``.

    It lets ``lr_find`` and ``fit`` run on cached features, which is hundreds
    of times faster than running the frozen backbone again. ``seed``: the
    head's weights come from a local generator (torch's global one is left alone).
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return Backbone("head-on-features", OrderedDict(), make_head(num_features, num_classes, generator=gen),
                    num_features, weights=None)


def on_slider(lr: float, low: int = -6, high: int = 0, step: float = SLIDER_STEP) -> float:
    """``lr`` rounded to the slider's grid (what the slider will show), within its range."""
    exponent = min(max(round(math.log10(lr) / step) * step, low), high)
    return float(10 ** exponent)


@dataclass
class Result:
    """What one action of the explorer produced; :meth:`LRExplorer.render` shows it."""

    action: str  # "find", "compare" or "finetune"
    finder: object = None
    runs: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)  # {lr: verdict text}
    kinds: dict = field(default_factory=dict)  # {lr: "too low" | "good" | "too high"}
    verdicts: dict = field(default_factory=dict)  # compare: lr_verdicts(runs)
    status: str = ""


class LRExplorer(ThreadedPanel):
    """A log-scale learning-rate slider, an LR finder and a side-by-side comparison.

    Args:
        train_feats, val_feats: cached Features (``tlkit.features.extract_features``).
        model, train_data, val_data: for ``mode="finetune"``: a trained Backbone and
            ImageDatasets (a small subset is taken).
        mode: ``"features"`` or ``"finetune"``.
        lrs: rates trained by **compare** (the slider's rate is added).
        epochs: head epochs per rate in **compare**.
        finetune_epochs, per_class, image_size: size of the fine-tune test.
        low_lr: the safe rate the fine-tune test compares against.
        blocking: run button actions in the calling thread.
    """

    busy_message = "Busy: wait for the current run to finish."

    def __init__(self, train_feats: Features | None = None, val_feats: Features | None = None, *,
                 model: nn.Module | None = None, train_data=None, val_data=None, mode: str = "features",
                 lrs: Sequence[float] = (1e-5, 1e-3, 1e-1, 1.0), epochs: int = 10, lr: float = 1e-3,
                 finetune_epochs: int = 2, per_class: int = 10, image_size: int = 128, low_lr: float = 1e-4,
                 seed: int = 0, blocking: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if mode == "features" and (train_feats is None or val_feats is None):
            raise ValueError("mode='features' needs train_feats and val_feats (from extract_features).")
        if mode == "finetune" and (model is None or train_data is None or val_data is None):
            raise ValueError("mode='finetune' needs model=, train_data= and val_data=.")
        self.train_feats, self.val_feats, self.mode = train_feats, val_feats, mode
        self.model, self.train_data, self.val_data = model, train_data, val_data
        self.lrs, self.epochs, self.seed = [float(v) for v in lrs], epochs, seed
        self.finetune_epochs, self.per_class, self.image_size, self.low_lr = finetune_epochs, per_class, image_size, low_lr
        self.runs: dict[float, History] = {}
        self.verdicts: dict[float, tuple[str, str]] = {}
        self.finder = None
        self.figures: dict[str, bytes] = {}  # the last PNG of each action ("find", "compare", "finetune")
        self._texts: dict[str, str] = {}
        self._init_threaded("tlkit-lr-explorer", blocking, status="Pick a learning rate, or press a button.")
        self._build(lr)

    def _build(self, lr: float) -> None:
        self.lr = W.FloatLogSlider(value=on_slider(lr), base=10, min=-6, max=0, step=SLIDER_STEP,
                                   description="learning rate", readout_format=".1e",
                                   style={"description_width": "initial"}, layout=W.Layout(width="420px"))
        self.find_button = W.Button(description="find LR", icon="search")
        self.compare_button = W.Button(description="compare", icon="bar-chart")
        self.finetune_button = W.Button(description="fine-tune test", icon="fire")
        self.find_button.on_click(lambda _: self.find_lr())
        self.compare_button.on_click(lambda _: self.compare())
        self.finetune_button.on_click(lambda _: self.finetune_test())
        buttons = [self.finetune_button] if self.mode == "finetune" else [self.find_button, self.compare_button]
        self.verdict_box = W.HTML(value="")
        self.plot = W.Image(format="png")
        show_png(self.plot, message_png("press a button"))
        self.widget = W.VBox([self.lr, W.HBox(buttons), self.status, self.error_box, self.verdict_box,
                              self.plot, self.log])

    def snapshot(self, action: str | None = None) -> Snapshot:
        """A static image of the plot, for viewers without a kernel: the PNG the panel drew.

        ``action=None``: what the panel shows now. ``"find"`` (the range-test
        curve), ``"compare"`` or ``"finetune"``: that action's last plot, also
        after a later action replaced it. Named ``"lr_<action>"``.

        Example:
            >>> explorer.find_lr(blocking=True); explorer.compare(blocking=True)
            >>> explorer.snapshot("find").name
            'lr_find'
        """
        if action is None:
            shown = next((a for a, png in self.figures.items() if png == bytes(self.plot.value or b"")), "plot")
            return image_snapshot(f"lr_{shown}", self.plot, self._texts.get(shown, self.status.value),
                                  empty="no action run yet")
        if action not in ("find", "compare", "finetune"):
            raise ValueError(f"action must be None, 'find', 'compare' or 'finetune', got {action!r}.")
        if action not in self.figures:
            raise ValueError(f"No {action!r} plot yet: run it first (find_lr(), compare() or finetune_test()).")
        return Snapshot(f"lr_{action}", self.figures[action], self._texts[action])

    # ---- actions ------------------------------------------------------
    def _clear_results(self) -> None:
        """A new action supersedes the last one's verdicts (its plot is replaced when it ends)."""
        self.verdict_box.value = ""

    def find_lr(self, blocking: bool | None = None) -> bool:
        """LR range test; the slider moves to the suggested rate."""
        return self._launch(self._find_lr, "Running the LR range test ...", blocking, prepare=self._clear_results)

    def compare(self, blocking: bool | None = None) -> bool:
        """Trains a head at each rate of ``lrs`` (and the slider's) and overlays the curves."""
        return self._launch(self._compare, "Training one head per learning rate ...", blocking,
                            prepare=self._clear_results)

    def finetune_test(self, blocking: bool | None = None) -> bool:
        """Fine-tunes copies of the model at the slider's rate and at ``low_lr``."""
        if self.mode != "finetune":
            raise ValueError("finetune_test needs LRExplorer(..., mode='finetune', model=, train_data=, val_data=).")
        return self._launch(self._finetune, "Fine-tuning two copies of the model ...", blocking,
                            prepare=self._clear_results)

    def _set_busy(self, busy: bool) -> None:
        for w in (self.find_button, self.compare_button, self.finetune_button):
            w.disabled = busy

    # ---- work (worker thread): each returns a Result ------------------
    def _feature_data(self, feats: Features) -> TensorDataset:
        return TensorDataset(feats.features, feats.labels)

    def _find_lr(self) -> Result:
        model = head_model(self.train_feats.features.shape[1], len(self.train_feats.classes), seed=self.seed)
        finder = lr_find(model, self._feature_data(self.train_feats), batch_size=64, seed=self.seed)
        return Result("find", finder=finder)

    def _compare(self) -> Result:
        lrs = sorted({*self.lrs, float(self.lr.value)})
        runs = {}
        for lr in lrs:
            self.status.value = f"Training a head at lr {viz.format_rate(lr)} ..."  # progress
            _, runs[lr] = train_head(self.train_feats, self.val_feats, epochs=self.epochs, lr=lr, seed=self.seed)
        verdicts = lr_verdicts(runs)
        return Result("compare", runs=runs, lines={lr: f"{v}: {why}" for lr, (v, why) in verdicts.items()},
                      kinds={lr: v for lr, (v, _) in verdicts.items()}, verdicts=verdicts,
                      status=f"Compared {len(lrs)} learning rates, {self.epochs} epochs each.")

    def _finetune(self) -> Result:
        train = subset(self.train_data, self.per_class, self.seed)
        val = subset(self.val_data, self.per_class, self.seed)
        val = val.with_transform(transforms_for(self.model, image_size=self.image_size))
        base = predict(self.model, val, batch_size=32, num_workers=0)
        base_loss = float(-base.probs.gather(1, base.labels[:, None]).clamp_min(1e-12).log().mean())
        runs = {}
        for lr in sorted({float(self.lr.value), self.low_lr}):
            self.status.value = f"Fine-tuning every layer at lr {viz.format_rate(lr)} ..."  # progress
            model = freeze_to(copy.deepcopy(self.model), 0)
            with keep_global_rng():  # fit(seed=...) seeds the global generators
                h = fit(model, train, val, epochs=self.finetune_epochs, lr=lr, image_size=self.image_size,
                        seed=self.seed, progress=False, batch_size=16, num_workers=0, scheduler=None)
            runs[lr] = History([{"epoch": 0, "val_acc": base.accuracy, "val_loss": base_loss}, *h.rows])
        lines, kinds = {}, {}
        for lr, h in runs.items():
            final = min(h["val_acc"][1:] or [base.accuracy])  # the worst epoch shows the damage
            collapsed = final < base.accuracy - 0.15
            kinds[lr] = "too high" if collapsed else "good"
            lines[lr] = (f"val accuracy {base.accuracy:.2f} before, as low as {final:.2f} while training"
                         + (": collapsed, the pretrained features were overwritten" if collapsed else ""))
        return Result("finetune", runs=runs, lines=lines, kinds=kinds,
                      status=f"Fine-tuned {len(runs)} copies for {self.finetune_epochs} epoch(s) each.")

    # ---- view ---------------------------------------------------------
    def render(self, result: Result) -> None:
        """Shows an action's result: the plot, the verdicts, the slider and the status line."""
        if result.action == "find":
            self.finder = result.finder
            self._show(result.action, viz.figure_to_png(viz.plot_lr_find(result.finder)))
            suggestion = result.finder.suggestion
            if suggestion:
                self.lr.value = on_slider(suggestion)
                self.status.value = (f"Suggested learning rate: {viz.format_rate(suggestion)}; "
                                     f"slider set to {viz.format_rate(self.lr.value)}.")
            else:
                self.status.value = "No clear suggestion: the loss never fell steadily. Look at the curve."
            self._texts["find"] = self.status.value
            return
        self.runs = result.runs
        if result.action == "compare":
            self.verdicts = result.verdicts
        self._show(result.action, viz.figure_to_png(viz.plot_lr_curves(result.runs)))
        self.verdict_box.value = "".join(
            f"<div><b>lr {viz.format_rate(lr)}</b> <span style='color:{VERDICT_COLOURS.get(result.kinds[lr], '#000')}'>"
            f"{html.escape(result.lines[lr])}</span></div>" for lr in sorted(result.lines))
        self.status.value = result.status
        self._texts[result.action] = "\n".join(
            [result.status] + [f"lr {viz.format_rate(lr)}: {result.lines[lr]}" for lr in sorted(result.lines)])

    def _show(self, action: str, png: bytes) -> None:
        """Puts an action's plot in the panel and keeps it for :meth:`snapshot`."""
        self.figures[action] = png
        show_png(self.plot, png)
