"""Activations cached at a freeze boundary, and the plan a training loop follows to use them.

* :mod:`tlkit.boundary.cache`: ``extract_activations`` (on disk, keyed like the
  pooled features plus the boundary and the weights below it) and
  ``TopModel`` (the groups above the boundary, sharing the model's parameters).
* :mod:`tlkit.boundary.plan`: ``plan()``, what ``fit`` calls once; then each
  epoch it hands out cached batches while they are valid.

Example:
    >>> from tlkit import boundary
    >>> p = boundary.plan(model, train, val, epochs=5)   # None: train live
"""
from tlkit.boundary.cache import (Activations, Batches, TopModel, activation_key, bottom_fingerprint,
                                  bottom_forward, bottom_groups, boundary_for, extract_activations)
from tlkit.boundary.plan import BoundaryPlan, activation_bytes, plan, plan_for_training

__all__ = ["Activations", "Batches", "BoundaryPlan", "TopModel", "activation_bytes", "activation_key",
           "bottom_fingerprint", "bottom_forward", "bottom_groups", "boundary_for", "extract_activations", "plan",
           "plan_for_training"]
