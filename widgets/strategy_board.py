"""StrategyBoard: feature extraction vs partial vs full fine-tuning, same data, same seed.

One click trains the three strategies one after the other and puts them side
by side: validation accuracy, seconds, and how many parameters each one
trained, plus their validation curves.

* **features**: the backbone runs once over the images (cached features),
  then only a new head is trained (``tlkit.features.train_head``).
* **partial**: the last two body groups and the head train
  (``tlkit.strategy.train_strategy(..., "partial")``).
* **finetune**: every group trains, earlier groups with lower rates.

Every strategy gets the same number of epochs by default (the budget is
shown in the table), and each accuracy comes with its 95% binomial interval
on the validation photos. The verdict names a winner only when it is ahead of
the runner-up by more than the interval of the difference; otherwise it says
"tie". The defaults are small (20 images per class at 128 px, 3 epochs) so a
run takes about a minute on a laptop CPU; raise them for real numbers.

Example:
    >>> board = StrategyBoard(train, val, per_class=20, image_size=128)
    >>> board.run(blocking=True)
    >>> board.results["features"]["val_acc"]
    0.95
"""
from __future__ import annotations

import copy
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
from tlkit.evaluate import binomial_interval, compare_accuracies
from tlkit.features import extract_features, train_head
from tlkit.freezing import count_parameters
from tlkit.heads import init_linear_
from tlkit.strategy import STRATEGIES, train_strategy
from widgets._base import ThreadedPanel, keep_global_rng
from widgets._plot import message_png, show_png
from widgets._snapshot import Snapshot, image_snapshot


DEFAULT_EPOCHS = 3


def verdict(results: dict[str, dict], n_val: int) -> str:
    """The board's conclusion: the best strategy only if it beats the runner-up beyond the interval.

    ``results``: ``{strategy: {"strategy": label, "val_acc", "epochs"}}``; ``n_val``: validation photos.

    Example:
        >>> verdict({"features": {"strategy": "feature extraction", "val_acc": 0.875, "epochs": 3},
        ...          "partial": {"strategy": "partial fine-tuning", "val_acc": 0.85, "epochs": 3}}, 40)[:4]
        'Tie:'
    """
    ranked = sorted(results.values(), key=lambda r: r["val_acc"], reverse=True)
    if not ranked:
        return "No strategy finished."
    best = ranked[0]
    budgets = sorted({r["epochs"] for r in ranked})
    unfair = (f" Budgets differ ({' vs '.join(str(r['epochs']) for r in ranked)} epochs): "
              "not a fair comparison." if len(budgets) > 1 else f" Same budget: {budgets[0]} epochs each.")
    if len(ranked) == 1:
        return f"Done. Only {best['strategy']} finished ({best['val_acc']:.3f}).{unfair}"
    second = ranked[1]
    if compare_accuracies(best["val_acc"], second["val_acc"], n_val) == "tie":
        tied = [r["strategy"] for r in ranked if compare_accuracies(best["val_acc"], r["val_acc"], n_val) == "tie"]
        return (f"Done. Tie: {' and '.join(tied)} are within the 95% interval of each other on {n_val} "
                f"validation photos (best {best['val_acc']:.3f}).{unfair}")
    return (f"Done. Best: {best['strategy']} ({best['val_acc']:.3f} validation accuracy), ahead of "
            f"{second['strategy']} ({second['val_acc']:.3f}) by more than the 95% interval on {n_val} "
            f"validation photos.{unfair}")


class StrategyBoard(ThreadedPanel):
    """Trains the three transfer-learning strategies and compares them.

    Args:
        train_ds, val_ds: ImageDatasets (transforms are set here).
        backbone: a registered name, or a function returning a fresh Backbone
            (called once per run; each strategy trains a copy of it).
        pretrained: ImageNet weights (for a registered name).
        per_class: images per class taken from each split (None: all of them).
        image_size: input size for every strategy.
        epochs: ``{strategy: epochs}``; missing ones get the default, 3 for each
            (an unequal budget is named in the verdict).
        lr: body learning rate for fine-tuning (the head gets ``head_lr``).
        head_lr: rate of the new head, also for feature extraction.
        seed: the same seed (weights of the new head, data order) for all three;
            the head is drawn from a local generator, not torch's global one.
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
        self.fit_kwargs = {"batch_size": 16, "num_workers": 0, **fit_kwargs}
        self.results: dict[str, dict] = {}
        self._init_threaded("tlkit-strategies", blocking,
                            status=(f"Ready: {len(self.train_ds)} training and {len(self.val_ds)} validation "
                                    f"images at {self.image_size} px. Press run."))
        self._build({**dict.fromkeys(STRATEGIES, DEFAULT_EPOCHS), **(epochs or {})})

    def _build(self, epochs: dict[str, int]) -> None:
        style = {"description_width": "initial"}
        self.epochs = {s: W.IntSlider(value=epochs[s], min=1, max=max(50, epochs[s]), style=style,
                                      description=f"{label} epochs") for s, label in STRATEGIES.items()}
        self.run_button = W.Button(description="run", button_style="success", icon="play")
        self.stop_button = W.Button(description="stop", button_style="danger", icon="stop")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = W.IntProgress(value=0, min=0, max=len(STRATEGIES), description="strategies")
        self.table = W.HTML(value="")
        self.plot = W.Image(format="png")
        show_png(self.plot, message_png("press run to compare the strategies"))
        self.widget = W.VBox([*self.epochs.values(), W.HBox([self.run_button, self.stop_button, self.progress]),
                              self.status, self.error_box, self.table, self.plot, self.log])

    busy_message = "Already running: wait for it to finish, or press stop."
    idle_stop_message = 'Nothing to stop: no run is going.'
    stopping_message = 'Stopping ...'

    # ---- controller -----------------------------------------------------
    def run(self, blocking: bool | None = None) -> bool:
        """Trains all three strategies (in a thread unless blocking); False if already running."""
        def prepare() -> None:
            self._stop_event = threading.Event()
            self.results = {}
            self.table.value, self.progress.value = "", 0

        return self._launch(self._run_all, "Starting ...", blocking, prepare=prepare)

    def _set_busy(self, busy: bool) -> None:
        self.run_button.disabled = busy

    def snapshot(self) -> Snapshot:
        """The strategies' validation curves as shown now (``"strategy_curves"``, the PNG the
        run drew) with the verdict and one line per strategy, for viewers without a kernel."""
        lines = [self.status.value] + [f"{r['strategy']}: best val acc {r['val_acc']:.3f} "
                                       f"({_interval(r, len(self.val_ds))}), {r['epochs']} epochs, "
                                       f"{r['trainable_params']:,} trainable parameters"
                                       for r in self.results.values()]
        return image_snapshot("strategy_curves", self.plot, "\n".join(lines), empty="no comparison run yet")

    # ---- worker -----------------------------------------------------------
    def _fresh_models(self):
        """One model per strategy: copies of one build, each with the same seeded new head.

        Copies, not a reseeded global generator: a worker thread must not reseed
        torch's global RNG (the notebook's own draws would change under it).
        """
        if callable(self.backbone):
            template = self.backbone()
        else:
            classes = self.train_ds.classes
            template = load_backbone(self.backbone, pretrained=self.pretrained, num_classes=len(classes),
                                     class_names=classes)
        init_linear_(template.head, torch.Generator().manual_seed(self.seed))
        while True:
            yield copy.deepcopy(template)

    def _run_all(self) -> dict[str, dict]:
        # fit(seed=...) (and a backbone function that seeds) touch torch's global generators:
        # the notebook's random state is put back when the run ends.
        with keep_global_rng():
            models = self._fresh_models()
            for i, (strategy, label) in enumerate(STRATEGIES.items()):
                if self._stop_event.is_set():
                    break
                self.status.value = f"Training {label} ({i + 1}/{len(STRATEGIES)}) ..."  # progress
                start = time.perf_counter()
                history, trainable = self._train(strategy, next(models), self.epochs[strategy].value)
                best = history.best("val_acc")
                self.results[strategy] = {"strategy": label, "val_acc": best["val_acc"] if best else float("nan"),
                                          "seconds": time.perf_counter() - start, "trainable_params": trainable,
                                          "epochs": len(history), "history": history}
                self.progress.value = i + 1
                self._show_table(self.results)  # each strategy appears as soon as it is done
        return self.results

    def _train(self, strategy: str, model: nn.Module, epochs: int):
        """Returns (History, number of trained parameters)."""
        if strategy == "features":
            tf = transforms_for(model, train=False, image_size=self.image_size)
            feats = [extract_features(model, ds.with_transform(tf), batch_size=self.fit_kwargs["batch_size"],
                                      cache_dir=self.cache_dir, progress=False, num_workers=0)
                     for ds in (self.train_ds, self.val_ds)]
            head, history = train_head(*feats, epochs=epochs, lr=self.head_lr, seed=self.seed, stop=self._stop_event)
            return history, sum(p.numel() for p in head.parameters())
        history = train_strategy(model, strategy, self.train_ds, self.val_ds, epochs=epochs, lr=self.lr,
                                 head_lr=self.head_lr, image_size=self.image_size, seed=self.seed,
                                 stop_event=self._stop_event, progress=False, **self.fit_kwargs)
        return history, count_parameters(model)[0]

    # ---- view ---------------------------------------------------------------
    def _show_table(self, results: dict[str, dict]) -> None:
        n = len(self.val_ds)
        rows = "".join(
            f"<tr><td>{html.escape(r['strategy'])}</td><td style='text-align:right'>{r['trainable_params']:,}</td>"
            f"<td style='text-align:right'>{r['val_acc']:.3f}</td><td style='text-align:right'>{_interval(r, n)}</td>"
            f"<td style='text-align:right'>{r['seconds']:.1f}</td>"
            f"<td style='text-align:right'>{r['epochs']}</td></tr>" for r in results.values())
        self.table.value = ("<table style='border-collapse:collapse' cellpadding='4'><tr><th>strategy</th>"
                            f"<th>trainable parameters</th><th>best val accuracy</th><th>95% interval ({n} photos)</th>"
                            f"<th>seconds</th><th>epochs</th></tr>{rows}</table>")
        runs = {r["strategy"]: r["history"] for r in results.values()}
        if runs:
            show_png(self.plot, viz.figure_to_png(viz.plot_history(runs, metrics=("val_loss", "val_acc"))))

    def render(self, results: dict[str, dict]) -> None:
        """The finished comparison: table, curves and the best strategy."""
        self._show_table(results)
        if self._stop_event.is_set():
            n = len(results)
            self.status.value = f"Stopped after {n} strateg{'y' if n == 1 else 'ies'}."
        else:
            self.status.value = verdict(results, len(self.val_ds))


def _interval(result: dict, n: int) -> str:
    acc = result["val_acc"]
    if not 0.0 <= acc <= 1.0:  # NaN: no validation epoch finished
        return "-"
    low, high = binomial_interval(acc, n)
    return f"{low:.3f}-{high:.3f}"
