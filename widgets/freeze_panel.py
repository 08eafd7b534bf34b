"""FreezePanel: freeze and unfreeze layer groups with a click, even while training.

One row per layer group, input to output: a toggle (trainable or frozen), the
parameter count and what its BatchNorm layers do in training. Changes go
straight to the model through :func:`tlkit.freezing.freeze` /
:func:`tlkit.freezing.unfreeze`, so the panel always agrees with
``trainable_summary(model)``.

While a run is going (the panel's :attr:`FreezePanel.callback` is among the
run's callbacks; a linked :class:`~widgets.TrainingDashboard` adds it for
you) a change is queued and applied at the next epoch boundary. Changing
``requires_grad`` in the middle of an epoch would make that epoch's numbers
mean nothing. A group unfrozen during training is added to the optimizer as
a new parameter group.

Example:
    >>> dash = TrainingDashboard(model, train, val)
    >>> panel = FreezePanel(model, dashboard=dash)
    >>> panel.freeze_all_but_head()
    >>> count_parameters(model)[0] == sum(p.numel() for p in model.head.parameters())
    True
"""
from __future__ import annotations

import threading

import ipywidgets as W
from torch import nn

from tlkit import viz
from tlkit.freezing import count_parameters, freeze, set_bn_policy, trainable_summary, unfreeze
from tlkit.callbacks import Callback
from widgets._base import Panel
from widgets._snapshot import Snapshot

_BN_KEY = "__bn_policy__"  # key of a queued BN policy change in the pending dict
KEEPING_POLICIES = ("eval", "eval_all")  # BN policies under which frozen BatchNorm keeps its statistics


class _EpochHook(Callback):
    """Applies the panel's queued changes at epoch boundaries of a running fit."""

    def __init__(self, panel: "FreezePanel"):
        self.panel = panel

    def on_train_begin(self, state) -> None:
        self.panel._set_active(True)

    def on_epoch_begin(self, state, epoch) -> None:
        self.panel.apply_pending(optimizer=getattr(state, "optimizer", None), epoch=epoch)

    def on_train_end(self, state) -> None:
        self.run_finished()

    def run_starting(self) -> None:
        """Called by the dashboard as it starts a run: from then on a click is queued, not
        applied while the training thread builds its optimizer (before ``on_train_begin``)."""
        self.panel._set_active(True)

    def run_finished(self) -> None:
        """Also called by the dashboard when its thread ends (even after an error)."""
        self.panel._set_active(False)
        self.panel.apply_pending()


class FreezePanel(Panel):
    """Toggles per layer group, the trainable/frozen totals, and two shortcuts.

    Args:
        model: a tlkit Backbone (from ``load_backbone``).
        dashboard: optional TrainingDashboard on the same model; the panel adds
            its epoch hook to the dashboard's runs.
        unfreeze_lr: learning rate for groups unfrozen during training
            (default: the smallest rate already in the optimizer).

    Example:
        >>> panel = FreezePanel(model)
        >>> panel.set_trainable("stem", False)
        >>> panel.totals.value
        'trainable: 1,234 parameters | frozen: 432 | 74.1% trainable'
    """

    def __init__(self, model: nn.Module, dashboard=None, unfreeze_lr: float | None = None):
        if not hasattr(model, "groups") or not hasattr(model, "frozen_groups"):
            raise TypeError(f"FreezePanel needs a tlkit Backbone (from load_backbone), got {type(model).__name__}.")
        self.model = model
        self.unfreeze_lr = unfreeze_lr
        self.callback = _EpochHook(self)
        self.applied: list[dict] = []  # log of applied changes: {"epoch", "changes"}
        self._lock = threading.RLock()
        self._pending: dict[str, object] = {}
        self._active = False
        self._keeping_policy = model.bn_policy if model.bn_policy in KEEPING_POLICIES else "eval"
        # Thread-local: observers fire in the thread that sets the value, so
        # only refresh()'s own writes are ignored, never a click arriving meanwhile.
        self._local = threading.local()
        self._build()
        self.refresh()
        if dashboard is not None:
            self.attach(dashboard)

    # ---- view ---------------------------------------------------------
    def _build(self) -> None:
        self.toggles: dict[str, W.ToggleButton] = {}
        self.state_labels: dict[str, W.Label] = {}
        self.bn_labels: dict[str, W.Label] = {}
        rows = []
        for name in self.model.group_names:
            toggle = W.ToggleButton(description=name, tooltip=f"train or freeze group {name}",
                                    layout=W.Layout(width="110px"))
            toggle.observe(lambda change, g=name: self._on_toggle(g, change), names="value")
            self.toggles[name] = toggle
            self.state_labels[name] = W.Label(layout=W.Layout(width="190px"))
            self.bn_labels[name] = W.Label(layout=W.Layout(width="170px"))
            rows.append(W.HBox([toggle, self.state_labels[name], self.bn_labels[name]]))
        self.freeze_body_button = W.Button(description="freeze all but head", icon="lock",
                                           layout=W.Layout(width="170px"))
        self.unfreeze_all_button = W.Button(description="unfreeze all", icon="unlock",
                                            layout=W.Layout(width="170px"))
        self.freeze_body_button.on_click(lambda _: self.freeze_all_but_head())
        self.unfreeze_all_button.on_click(lambda _: self.unfreeze_all())
        self.bn_checkbox = W.Checkbox(description="frozen BatchNorm keeps its running statistics",
                                      value=self.model.bn_policy in KEEPING_POLICIES, indent=False,
                                      layout=W.Layout(width="480px"))
        self.bn_checkbox.observe(self._on_bn_checkbox, names="value")
        self.totals = W.Label()
        self.status = W.Label()
        title = W.HTML("<b>Layer groups</b> (input &rarr; output): click to freeze or unfreeze")
        self.widget = W.VBox([title, *rows, W.HBox([self.freeze_body_button, self.unfreeze_all_button]),
                              self.bn_checkbox, self.totals, self.status])

    def refresh(self) -> None:
        """Redraws every row from the model (``trainable_summary``) and the queued changes."""
        rows = trainable_summary(self.model)
        with self._lock:
            pending = dict(self._pending)
        self._local.syncing = True
        try:
            for r in rows:
                g = r["group"]
                want = pending.get(g, r["trainable"])
                self.toggles[g].value = bool(want)
                self.toggles[g].button_style = "success" if want else ""
                self.toggles[g].icon = "unlock" if want else "lock"
                state = "trainable" if r["trainable"] else "frozen"
                if g in pending and pending[g] != r["trainable"]:
                    state += " -> " + ("trainable" if pending[g] else "frozen") + " (queued)"
                self.state_labels[g].value = f"{state}, {r['params']:,} params"
                self.bn_labels[g].value = f"BatchNorm: {r['bn_mode']}"
            self.bn_checkbox.value = pending.get(_BN_KEY, self.model.bn_policy) in KEEPING_POLICIES
        finally:
            self._local.syncing = False
        self.totals.value = self._totals_text()

    def _totals_text(self) -> str:
        trainable, total = count_parameters(self.model)
        pct = 100 * trainable / max(total, 1)
        return f"trainable: {trainable:,} parameters | frozen: {total - trainable:,} | {pct:.1f}% trainable"

    def snapshot(self) -> Snapshot:
        """The freeze state now as a static image (``"freeze_state"``), for viewers without a kernel.

        One table row per group, input to output: trainable or frozen (and a
        queued change), parameters, BatchNorm mode; the title is the totals
        line. ``text`` lists the same, one group a line.

        Example:
            >>> panel.freeze_all_but_head()
            >>> panel.snapshot().text.splitlines()[-1]
            'head: trainable, 2,562 params'
        """
        rows, pending = trainable_summary(self.model), self.pending
        for r in rows:
            r["state"] = "trainable" if r["trainable"] else "frozen"
            if r["group"] in pending and pending[r["group"]] != r["trainable"]:
                r["state"] += " -> " + ("trainable" if pending[r["group"]] else "frozen") + " (queued)"
        totals = self._totals_text()
        png = viz.figure_to_png(viz.plot_freeze_state(rows, title=totals), dpi=100)
        lines = [totals] + [f"{r['group']}: {r['state']}, {r['params']:,} params" for r in rows]
        return Snapshot("freeze_state", png, "\n".join(lines))

    # ---- controller ---------------------------------------------------
    def _on_toggle(self, group: str, change) -> None:
        if not getattr(self._local, "syncing", False):
            self._request({group: bool(change["new"])})

    def _on_bn_checkbox(self, change) -> None:
        if not getattr(self._local, "syncing", False):
            self.set_bn_keeps_statistics(bool(change["new"]))

    def set_bn_keeps_statistics(self, keep: bool = True) -> None:
        """What the checkbox does: ``keep=False`` is the BN policy ``"train"``; ``keep=True``
        restores the policy that keeps statistics which was in force before (``"eval_all"``
        stays ``"eval_all"``; ``"eval"`` when there was none)."""
        with self._lock:
            current = self._pending.get(_BN_KEY, self.model.bn_policy)
            if current in KEEPING_POLICIES:
                self._keeping_policy = current
        self._request({_BN_KEY: self._keeping_policy if keep else "train"})

    def set_trainable(self, group: str | list[str], trainable: bool = True) -> None:
        """Freezes (``trainable=False``) or unfreezes groups, now or at the next epoch."""
        names = [group] if isinstance(group, str) else list(group)
        bad = [g for g in names if g not in self.toggles]
        if bad:
            raise KeyError(f"Unknown layer group(s) {bad}; this model has: {', '.join(self.toggles)}.")
        self._request({g: bool(trainable) for g in names})

    def freeze_all_but_head(self) -> None:
        """Feature extraction: every group frozen except ``head``."""
        self._request({g: g == "head" for g in self.model.group_names})

    def unfreeze_all(self) -> None:
        """Full fine-tuning: every group trainable."""
        self._request({g: True for g in self.model.group_names})

    def _request(self, changes: dict[str, object]) -> None:
        with self._lock:
            if self._active:
                for key, value in changes.items():
                    if value == self._current(key):  # e.g. toggled twice: nothing left to do
                        self._pending.pop(key, None)
                    else:
                        self._pending[key] = value
                n = len(self._pending)
                self.status.value = (f"Training is running: {n} change(s) queued, "
                                     "applied at the start of the next epoch.")
            else:
                self._apply(changes, optimizer=None)
                self.status.value = ""
        self.refresh()

    def _current(self, key: str) -> object:
        """The model's present value for a pending-dict key (trainable flag or BN policy)."""
        return self.model.bn_policy if key == _BN_KEY else key not in self.model.frozen_groups

    def _apply(self, changes: dict[str, object], optimizer=None) -> None:
        groups = {g: v for g, v in changes.items() if g != _BN_KEY}
        to_freeze = [g for g, v in groups.items() if not v]
        to_unfreeze = [g for g, v in groups.items() if v]
        if to_freeze:
            freeze(self.model, to_freeze)
        if to_unfreeze:
            # lr None: tlkit.freezing.unfrozen_group_lr, the lowest peak rate (new groups start gently)
            unfreeze(self.model, to_unfreeze, optimizer=optimizer, lr=self.unfreeze_lr)
        if _BN_KEY in changes:
            set_bn_policy(self.model, changes[_BN_KEY])

    def apply_pending(self, optimizer=None, epoch: int | None = None) -> dict[str, object]:
        """Applies the queued changes (called at epoch boundaries); returns what was applied."""
        with self._lock:
            changes, self._pending = self._pending, {}
            if changes:
                self._apply(changes, optimizer=optimizer)
                self.applied.append({"epoch": epoch, "changes": dict(changes)})
                where = f"at the start of epoch {epoch}" if epoch is not None else "after training"
                self.status.value = f"Applied {len(changes)} queued change(s) {where}."
        if changes:
            self.refresh()
        return changes

    def _set_active(self, active: bool) -> None:
        with self._lock:
            self._active = active

    @property
    def pending(self) -> dict[str, object]:
        """Changes waiting for the next epoch boundary (group -> trainable)."""
        with self._lock:
            return dict(self._pending)

    def attach(self, dashboard) -> None:
        """Links a TrainingDashboard: its runs carry this panel's epoch hook."""
        dashboard.add_callback(self.callback)
