"""StrategyBoard: feature extraction vs partial vs full fine-tuning, same data, same seed.

One click trains the three strategies one after the other and puts them side
by side: validation accuracy, seconds, and how many parameters each one
trained, plus their validation curves.

* **features**: the backbone runs once over the images (cached features),
  then only a new head is trained (``tlkit.features.train_head``).
* **partial**: the last two body groups and the head train
  (``tlkit.strategy.train_strategy(..., "partial")``).
* **finetune**: every group trains, earlier groups with lower rates.

The defaults are small (20 images per class at 128 px, few epochs) so a run
takes about a minute on a laptop CPU; raise them for real numbers.

Example:
    >>> board = StrategyBoard(train, val, per_class=20, image_size=128)
    >>> board.run(blocking=True)
    >>> board.results["features"]["val_acc"]
    0.95
"""
from __future__ import annotations

import html
import threading
import time
from typing import Callable

import ipywidgets as W
import torch
from torch import nn

from tlkit import viz
from tlkit.backbones import load_backbone
from tlkit.data import subset, transforms_for
from tlkit.features import extract_features, train_head
from tlkit.freezing import count_parameters
from tlkit.strategy import STRATEGIES, train_strategy
from widgets._base import Panel, Worker, describe_error, error_html
from widgets._plot import message_png


class StrategyBoard(Panel):
    """Trains the three transfer-learning strategies and compares them.

    Args:
        train_ds, val_ds: ImageDatasets (transforms are set here).
        backbone: a registered name, or a function returning a fresh Backbone
            (called once per strategy, after seeding).
        pretrained: ImageNet weights (for a registered name).
        per_class: images per class taken from each split (None: all of them).
        image_size: input size for every strategy.
        epochs: ``{strategy: epochs}``; missing ones get the defaults
            (features 15 head epochs, partial 5, finetune 5).
        lr: body learning rate for fine-tuning (the head gets ``head_lr``).
        head_lr: rate of the new head, also for feature extraction.
        seed: the same seed (weights of the new head, data order) for all three.
        cache_dir: feature cache folder (None: the user cache).
        blocking: ``run()`` in the calling thread.
        **fit_kwargs: more keywords for ``fit`` (``batch_size``, ``device``, ...).
    """

    def __init__(self, train_ds, val_ds, backbone: str | Callable[[], nn.Module] = "efficientnet_lite0",
                 pretrained: bool = True, per_class: int | None = 20, image_size: int = 128,
                 epochs: dict[str, int] | None = None, lr: float = 3e-4, head_lr: float = 1e-3,
                 seed: int = 0, cache_dir=None, blocking: bool = False, **fit_kwargs):
        unknown = set(epochs or {}) - set(STRATEGIES)
        if unknown:
            raise KeyError(f"Unknown strategies {sorted(unknown)} in epochs; choose from {list(STRATEGIES)}.")
        self.train_ds = subset(train_ds, per_class, seed) if per_class else train_ds
        self.val_ds = subset(val_ds, per_class, seed) if per_class else val_ds
        self.backbone, self.pretrained, self.image_size = backbone, pretrained, image_size
        self.lr, self.head_lr, self.seed, self.cache_dir = lr, head_lr, seed, cache_dir
        self.blocking = blocking
        self.fit_kwargs = {"batch_size": 16, "num_workers": 0, **fit_kwargs}
        self.results: dict[str, dict] = {}
        self._stop = threading.Event()
        self._worker = Worker(self._run_all, on_error=self._show_error, on_done=self._finished,
                              name="tlkit-strategies")
        self._build({"features": 15, "partial": 5, "finetune": 5, **(epochs or {})})

    def _build(self, epochs: dict[str, int]) -> None:
        style = {"description_width": "initial"}
        self.epochs = {s: W.IntSlider(value=epochs[s], min=1, max=max(50, epochs[s]), style=style,
                                      description=f"{label} epochs") for s, label in STRATEGIES.items()}
        self.run_button = W.Button(description="run", button_style="success", icon="play")
        self.stop_button = W.Button(description="stop", button_style="danger", icon="stop")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = W.IntProgress(value=0, min=0, max=len(STRATEGIES), description="strategies")
        self.status = W.Label(value=(f"Ready: {len(self.train_ds)} training and {len(self.val_ds)} validation "
                                     f"images at {self.image_size} px. Press run."))
        self.error_box = W.HTML(value="")
        self.table = W.HTML(value="")
        self.plot = W.Image(value=message_png("press run to compare the strategies"), format="png")
        self.log = W.Output()
        self.widget = W.VBox([*self.epochs.values(), W.HBox([self.run_button, self.stop_button, self.progress]),
                              self.status, self.error_box, self.table, self.plot, self.log])

    # ---- controller -----------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._worker.is_running

    @property
    def error(self) -> BaseException | None:
        return self._worker.error

    def run(self, blocking: bool | None = None) -> bool:
        """Trains all three strategies (in a thread unless blocking); False if already running."""
        if self.is_running:
            self.status.value = "Already running: wait for it to finish, or press stop."
            return False
        self._stop = threading.Event()
        self.results = {}
        self.error_box.value, self.table.value, self.progress.value = "", "", 0
        self.run_button.disabled = True
        return self._worker.start(blocking=self.blocking if blocking is None else blocking)

    def stop(self) -> bool:
        """Ends the strategy being trained after its current batch and skips the rest."""
        if not self.is_running:
            self.status.value = "Nothing to stop: no run is going."
            return False
        self._stop.set()
        self.status.value = "Stopping ..."
        return True

    def join(self, timeout: float | None = None) -> bool:
        return self._worker.join(timeout)

    # ---- worker -----------------------------------------------------------
    def _fresh_model(self) -> nn.Module:
        torch.manual_seed(self.seed)  # the same new head for every strategy
        if callable(self.backbone):
            return self.backbone()
        classes = self.train_ds.classes
        return load_backbone(self.backbone, pretrained=self.pretrained, num_classes=len(classes),
                             class_names=classes)

    def _run_all(self) -> None:
        for i, (strategy, label) in enumerate(STRATEGIES.items()):
            if self._stop.is_set():
                break
            self.status.value = f"Training {label} ({i + 1}/{len(STRATEGIES)}) ..."
            start = time.perf_counter()
            history, trainable = self._train(strategy, self._fresh_model(), self.epochs[strategy].value)
            best = history.best("val_acc")
            self.results[strategy] = {"strategy": label, "val_acc": best["val_acc"] if best else float("nan"),
                                      "seconds": time.perf_counter() - start, "trainable_params": trainable,
                                      "epochs": len(history), "history": history}
            self.progress.value = i + 1
            self._show_results()

    def _train(self, strategy: str, model: nn.Module, epochs: int):
        """Returns (History, number of trained parameters)."""
        if strategy == "features":
            tf = transforms_for(model, train=False, image_size=self.image_size)
            feats = [extract_features(model, ds.with_transform(tf), batch_size=self.fit_kwargs["batch_size"],
                                      cache_dir=self.cache_dir, progress=False, num_workers=0)
                     for ds in (self.train_ds, self.val_ds)]
            head, history = train_head(*feats, epochs=epochs, lr=self.head_lr, seed=self.seed, stop=self._stop)
            return history, sum(p.numel() for p in head.parameters())
        history = train_strategy(model, strategy, self.train_ds, self.val_ds, epochs=epochs, lr=self.lr,
                                 head_lr=self.head_lr, image_size=self.image_size, seed=self.seed,
                                 stop_event=self._stop, progress=False, **self.fit_kwargs)
        return history, count_parameters(model)[0]

    def _show_results(self) -> None:
        rows = "".join(
            f"<tr><td>{html.escape(r['strategy'])}</td><td style='text-align:right'>{r['trainable_params']:,}</td>"
            f"<td style='text-align:right'>{r['val_acc']:.3f}</td><td style='text-align:right'>{r['seconds']:.1f}</td>"
            f"<td style='text-align:right'>{r['epochs']}</td></tr>" for r in self.results.values())
        self.table.value = ("<table style='border-collapse:collapse' cellpadding='4'><tr><th>strategy</th>"
                            "<th>trainable parameters</th><th>best val accuracy</th><th>seconds</th>"
                            f"<th>epochs</th></tr>{rows}</table>")
        runs = {r["strategy"]: r["history"] for r in self.results.values()}
        self.plot.value = viz.figure_to_png(viz.plot_history(runs, metrics=("val_loss", "val_acc")))

    def _show_error(self, exc: BaseException, tb: str) -> None:
        self.error_box.value = error_html(describe_error(exc))
        self.log.append_stdout(tb)

    def _finished(self) -> None:
        self.run_button.disabled = False
        if self.error is not None:
            self.status.value = f"Failed: {describe_error(self.error)}"
        elif self._stop.is_set():
            self.status.value = f"Stopped after {len(self.results)} strateg{'y' if len(self.results) == 1 else 'ies'}."
        else:
            best = max(self.results.values(), key=lambda r: r["val_acc"])
            self.status.value = f"Done. Best: {best['strategy']} ({best['val_acc']:.3f} validation accuracy)."
