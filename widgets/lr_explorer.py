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
from widgets._base import Panel, Worker, describe_error, error_html
from widgets._plot import message_png

MODES = ("features", "finetune")
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


def head_model(num_features: int, num_classes: int) -> Backbone:
    """A Backbone with no body: a head over pooled feature vectors ``(B, F) -> (B, C)``.

    It lets ``lr_find`` and ``fit`` run on cached features, which is hundreds
    of times faster than running the frozen backbone again.
    """
    return Backbone("head-on-features", OrderedDict(), make_head(num_features, num_classes),
                    num_features, weights=None)


class LRExplorer(Panel):
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
        self.lrs, self.epochs, self.seed, self.blocking = [float(v) for v in lrs], epochs, seed, blocking
        self.finetune_epochs, self.per_class, self.image_size, self.low_lr = finetune_epochs, per_class, image_size, low_lr
        self.runs: dict[float, History] = {}
        self.verdicts: dict[float, tuple[str, str]] = {}
        self.finder = None
        self._action = None
        self._worker = Worker(lambda: self._action(), on_error=self._show_error, name="tlkit-lr-explorer")
        self._build(lr)

    def _build(self, lr: float) -> None:
        self.lr = W.FloatLogSlider(value=lr, base=10, min=-6, max=0, step=0.1, description="learning rate",
                                   readout_format=".0e", style={"description_width": "initial"},
                                   layout=W.Layout(width="420px"))
        self.find_button = W.Button(description="find LR", icon="search")
        self.compare_button = W.Button(description="compare", icon="bar-chart")
        self.finetune_button = W.Button(description="fine-tune test", icon="fire")
        self.find_button.on_click(lambda _: self.find_lr())
        self.compare_button.on_click(lambda _: self.compare())
        self.finetune_button.on_click(lambda _: self.finetune_test())
        buttons = [self.finetune_button] if self.mode == "finetune" else [self.find_button, self.compare_button]
        self.status = W.Label(value="Pick a learning rate, or press a button.")
        self.error_box = W.HTML(value="")
        self.verdict_box = W.HTML(value="")
        self.plot = W.Image(value=message_png("press a button"), format="png")
        self.log = W.Output()
        self.widget = W.VBox([self.lr, W.HBox(buttons), self.status, self.error_box, self.verdict_box,
                              self.plot, self.log])

    # ---- actions ------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._worker.is_running

    @property
    def error(self) -> BaseException | None:
        return self._worker.error

    def join(self, timeout: float | None = None) -> bool:
        return self._worker.join(timeout)

    def _start(self, action, message: str, blocking: bool | None) -> bool:
        if self.is_running:
            self.status.value = "Busy: wait for the current run to finish."
            return False
        self._action = action
        self.error_box.value = ""
        self.status.value = message
        return self._worker.start(blocking=self.blocking if blocking is None else blocking)

    def find_lr(self, blocking: bool | None = None) -> bool:
        """LR range test; the slider moves to the suggested rate."""
        return self._start(self._find_lr, "Running the LR range test ...", blocking)

    def compare(self, blocking: bool | None = None) -> bool:
        """Trains a head at each rate of ``lrs`` (and the slider's) and overlays the curves."""
        return self._start(self._compare, "Training one head per learning rate ...", blocking)

    def finetune_test(self, blocking: bool | None = None) -> bool:
        """Fine-tunes copies of the model at the slider's rate and at ``low_lr``."""
        if self.mode != "finetune":
            raise ValueError("finetune_test needs LRExplorer(..., mode='finetune', model=, train_data=, val_data=).")
        return self._start(self._finetune, "Fine-tuning two copies of the model ...", blocking)

    # ---- work (worker thread) -----------------------------------------
    def _feature_data(self, feats: Features) -> TensorDataset:
        return TensorDataset(feats.features, feats.labels)

    def _find_lr(self) -> None:
        torch.manual_seed(self.seed)
        model = head_model(self.train_feats.features.shape[1], len(self.train_feats.classes))
        self.finder = lr_find(model, self._feature_data(self.train_feats), batch_size=64)
        self.plot.value = viz.figure_to_png(viz.plot_lr_find(self.finder))
        if self.finder.suggestion:
            self.lr.value = float(self.finder.suggestion)
            self.status.value = f"Suggested learning rate: {self.finder.suggestion:.1e} (slider set to it)."
        else:
            self.status.value = "No clear suggestion: the loss never fell steadily. Look at the curve."

    def _compare(self) -> None:
        lrs = sorted({*self.lrs, float(self.lr.value)})
        self.runs = {}
        for lr in lrs:
            self.status.value = f"Training a head at lr {lr:.0e} ..."
            _, self.runs[lr] = train_head(self.train_feats, self.val_feats, epochs=self.epochs, lr=lr,
                                          seed=self.seed)
        self.verdicts = lr_verdicts(self.runs)
        self.plot.value = viz.figure_to_png(viz.plot_lr_curves(self.runs))
        self._show_verdicts({lr: f"{v}: {why}" for lr, (v, why) in self.verdicts.items()},
                            {lr: v for lr, (v, _) in self.verdicts.items()})
        self.status.value = f"Compared {len(lrs)} learning rates, {self.epochs} epochs each."

    def _finetune(self) -> None:
        train = subset(self.train_data, self.per_class, self.seed)
        val = subset(self.val_data, self.per_class, self.seed)
        val = val.with_transform(transforms_for(self.model, image_size=self.image_size))
        base = predict(self.model, val, batch_size=32, num_workers=0)
        base_loss = float(-base.probs.gather(1, base.labels[:, None]).clamp_min(1e-12).log().mean())
        self.runs = {}
        for lr in sorted({float(self.lr.value), self.low_lr}):
            self.status.value = f"Fine-tuning every layer at lr {lr:.0e} ..."
            model = freeze_to(copy.deepcopy(self.model), 0)
            h = fit(model, train, val, epochs=self.finetune_epochs, lr=lr, image_size=self.image_size,
                    seed=self.seed, progress=False, batch_size=16, num_workers=0, scheduler=None)
            self.runs[lr] = History([{"epoch": 0, "val_acc": base.accuracy, "val_loss": base_loss}, *h.rows])
        self.plot.value = viz.figure_to_png(viz.plot_lr_curves(self.runs))
        lines, kinds = {}, {}
        for lr, h in self.runs.items():
            final = min(h["val_acc"][1:] or [base.accuracy])  # the worst epoch shows the damage
            collapsed = final < base.accuracy - 0.15
            kinds[lr] = "too high" if collapsed else "good"
            lines[lr] = (f"val accuracy {base.accuracy:.2f} before, as low as {final:.2f} while training"
                         + (": collapsed, the pretrained features were overwritten" if collapsed else ""))
        self._show_verdicts(lines, kinds)
        self.status.value = f"Fine-tuned {len(self.runs)} copies for {self.finetune_epochs} epoch(s) each."

    # ---- view ---------------------------------------------------------
    def _show_verdicts(self, lines: dict[float, str], kinds: dict[float, str]) -> None:
        self.verdict_box.value = "".join(
            f"<div><b>lr {lr:.0e}</b> <span style='color:{VERDICT_COLOURS.get(kinds[lr], '#000')}'>"
            f"{html.escape(lines[lr])}</span></div>" for lr in sorted(lines))

    def _show_error(self, exc: BaseException, tb: str) -> None:
        self.error_box.value = error_html(describe_error(exc))
        self.log.append_stdout(tb)
        self.status.value = f"Failed: {describe_error(exc)}"
