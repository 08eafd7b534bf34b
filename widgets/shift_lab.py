"""ShiftLab: pick a shift and a severity; see the shifted photos and the accuracy before and after AdaBN.

The lab evaluates a trained model on a small sample of validation photos
(100 per class by default) under one built-in shift (:mod:`tlkit.shift_kinds`),
then on a *copy* of the model whose BatchNorm statistics were re-estimated on
those shifted photos without their labels (:func:`tlkit.adapt.adapt_batchnorm`).
The model you pass is never changed. Features go through the feature cache and
the adapted statistics are kept in memory, so a setting seen before shows at
once; a new one takes a few seconds on a CPU.

Whether AdaBN helps depends on the statistics the head was trained with (see
:mod:`tlkit.adapt`): the verdict says "helps", "hurts" or "no clear change",
judged against the 95% interval of the difference on the sample.

Example:
    >>> lab = ShiftLab(model, val, per_class=100)
    >>> lab                                  # pick a shift and a severity, press Run
    >>> lab.shift.value, lab.severity.value = "dark", 4
    >>> lab.run(blocking=True)["after"]
    0.93
"""
from __future__ import annotations

import copy
import html
import io

import ipywidgets as W
import torch
from PIL import Image
from torch import nn

from tlkit.adapt import adapted_copy, batchnorm_layers, require_batchnorm
from tlkit.data import subset, transforms_for
from tlkit.evaluate import binomial_interval, compare_accuracies, predictions_from_features
from tlkit.features import extract_features
from tlkit.shift_kinds import SEVERITIES, SHIFTS
from tlkit.shifts import shifted
from widgets._base import ThreadedPanel, keep_global_rng
from widgets._plot import show_png

THUMB = 96  # pixels per photo in the sample grid


def sample_grid_png(images: list[Image.Image], columns: int = 4, side: int = THUMB) -> bytes:
    """The images as one PNG grid, each centre-cropped to ``side`` pixels (no plotting library needed).

    Example:
        >>> sample_grid_png([Image.new("RGB", (50, 40))] * 8)[:4]
        b'\\x89PNG'
    """
    if not images:
        raise ValueError("sample_grid_png needs at least one image.")
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * side, rows * side), "white")
    for i, img in enumerate(images):
        thumb = img.convert("RGB")
        scale = side / min(thumb.size)
        thumb = thumb.resize((max(side, round(thumb.width * scale)), max(side, round(thumb.height * scale))))
        left, top = (thumb.width - side) // 2, (thumb.height - side) // 2
        grid.paste(thumb.crop((left, top, left + side, top + side)), ((i % columns) * side, (i // columns) * side))
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()


def adabn_verdict(before: float, after: float, n: int) -> str:
    """"helps", "hurts" or "no clear change": the difference against its 95% interval on ``n`` photos.

    Example:
        >>> adabn_verdict(0.70, 0.90, 200), adabn_verdict(0.90, 0.91, 200)
        ('helps', 'no clear change')
    """
    winner = compare_accuracies(after, before, n)
    return "helps" if winner == "a" else "hurts" if winner == "b" else "no clear change"


class ShiftLab(ThreadedPanel):
    """Shift, severity, Run: a grid of shifted photos and the accuracy before and after AdaBN.

    Args:
        model: a trained tlkit Backbone with BatchNorm (its head is the one evaluated); never changed.
        val_ds: labelled photos (an ImageDataset); ``per_class`` of each class are used.
        per_class: photos per class in the sample (None: all of them).
        image_size: input size (None: the model's).
        seed: the sample's and the random shifts' seed.
        cache_dir: feature cache folder (None: the user cache).
        blocking: ``run()`` in the calling thread (scripts, tests, nbval).
        batch_size: images per pass.
    """

    def __init__(self, model: nn.Module, val_ds, per_class: int | None = 100, image_size: int | None = None,
                 seed: int = 0, cache_dir=None, blocking: bool = False, batch_size: int = 64):
        require_batchnorm(model)
        self.model, self.seed, self.cache_dir, self.batch_size = model, seed, cache_dir, batch_size
        self.sample = subset(val_ds, per_class, seed) if per_class else val_ds
        self.image_size = image_size or model.input_size
        self.results: dict[str, dict] = {}           # "name:severity" -> the last result
        self._stats: dict[str, dict] = {}            # "name:severity" -> adapted BatchNorm buffers
        self._clean: float | None = None
        self._init_threaded("tlkit-shift-lab", blocking,
                            status=f"Ready: {len(self.sample)} photos at {self.image_size} px. Pick a shift, press Run.")
        self.shift = W.Dropdown(options=list(SHIFTS), value="dark", description="shift")
        self.severity = W.IntSlider(value=3, min=SEVERITIES[0], max=SEVERITIES[-1], description="severity")
        self.run_button = W.Button(description="Run", button_style="primary")
        self.stop_button = W.Button(description="Stop")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.grid = W.Image(format="png")
        self.table = W.HTML(value="")
        self.widget = W.VBox([W.HBox([self.shift, self.severity, self.run_button, self.stop_button]),
                              self.status, self.error_box, W.HBox([self.grid, self.table]), self.log])

    @property
    def spec(self) -> str:
        """The chosen shift as ``NAME:SEVERITY``."""
        return f"{self.shift.value}:{int(self.severity.value)}"

    def run(self, blocking: bool | None = None) -> dict | None:
        """Evaluates the chosen setting; with ``blocking`` returns its result (None when busy).

        The result: ``shift``, ``n``, ``clean`` (accuracy without the shift), ``before``,
        ``after`` (after AdaBN), ``verdict``, and ``grid`` (PNG bytes).
        """
        spec = self.spec
        started = self._launch(lambda: self._evaluate(spec), f"Evaluating {spec} on {len(self.sample)} photos ...",
                               blocking=blocking, prepare=self._stop_event.clear)
        done = started and (self.blocking if blocking is None else blocking)
        return self.results.get(spec) if done and self.error is None else None

    def _accuracy(self, model: nn.Module, data) -> float:
        feats = extract_features(model, data.with_transform(self._tf), batch_size=self.batch_size,
                                 cache_dir=self.cache_dir, progress=False, engine="torch", num_workers=0)
        return predictions_from_features(model.head, feats).accuracy

    def _check_stop(self) -> None:
        if self._stop_event.is_set():
            raise InterruptedError("Stopped; press Run to start again.")

    def _evaluate(self, spec: str) -> dict:
        self._tf = transforms_for(self.model, train=False, image_size=self.image_size)
        data = shifted(self.sample, spec, seed=self.seed)
        if self._clean is None:
            self._clean = self._accuracy(self.model, self.sample)
        self._check_stop()
        before = self._accuracy(self.model, data)
        self._check_stop()
        if spec in self._stats:  # seen before: the adapted statistics, without another pass
            adapted = copy.deepcopy(self.model)
            adapted.load_state_dict(self._stats[spec], strict=False)
        else:
            with keep_global_rng():  # a copy: the user's model keeps its statistics
                adapted = adapted_copy(self.model, data.with_transform(self._tf), batch_size=self.batch_size,
                                       progress=False)
            names = {id(m) for m in batchnorm_layers(adapted)}
            self._stats[spec] = {f"{n}.{b}": t.clone() for n, m in adapted.named_modules() if id(m) in names
                                 for b, t in m.named_buffers(recurse=False)}
        self._check_stop()
        after = self._accuracy(adapted, data)
        n = len(self.sample)
        grid = sample_grid_png(self._grid_images(data))
        self.results[spec] = {"shift": spec, "n": n, "clean": self._clean, "before": before, "after": after,
                              "verdict": adabn_verdict(before, after, n), "grid": grid}
        return self.results[spec]

    def _grid_images(self, data, per_class: int = 4) -> list[Image.Image]:
        picks = [i for c in range(len(data.classes)) for i in
                 [j for j, t in enumerate(data.targets) if t == c][:per_class]]
        return [img for img in (data[i][0] for i in picks) if img is not None]

    def render(self, result: dict) -> None:
        show_png(self.grid, result["grid"])
        n = result["n"]

        def cell(acc: float) -> str:
            low, high = binomial_interval(acc, n)
            return f"<td>{acc:.3f}</td><td>[{low:.2f}, {high:.2f}]</td>"

        rows = [("no shift", result["clean"]), (f"{html.escape(result['shift'])}, as trained", result["before"]),
                (f"{html.escape(result['shift'])}, after AdaBN", result["after"])]
        body = "".join(f"<tr><td>{name}</td>{cell(acc)}</tr>" for name, acc in rows)
        self.table.value = (f"<table><tr><th></th><th>accuracy</th><th>95% interval</th></tr>{body}</table>"
                            f"<p>AdaBN <b>{result['verdict']}</b> here ({n} photos; the top rows of the grid "
                            f"are {html.escape(self.sample.classes[0])}).</p>")
        self.status.value = f"Done: {result['shift']}, {result['before']:.3f} -> {result['after']:.3f} after AdaBN."

    def _set_busy(self, busy: bool) -> None:
        self.run_button.disabled = busy
        self.shift.disabled = self.severity.disabled = busy

    def _show_error(self, exc: BaseException, tb: str) -> None:
        if isinstance(exc, InterruptedError):  # a stop is not a failure
            self.status.value = str(exc)
            return
        super()._show_error(exc, tb)
