"""Distillation into a student's body on the real data: the same student with and without the teacher.

    TLKIT_DATA_DIR=/path/with/cats_and_dogs_filtered python bench/distill_check.py [--per-class 200]

Teacher: EfficientNet-Lite2 (ImageNet body, 260 px) with a head fitted on the cached features
of ``--per-class`` training photos per class. Student: EfficientNet-Lite0 at ``--student-size``
px (default 128) with its last two stages and a fresh head unfrozen. The student trains twice
from the same start, same photos, epochs and learning rate: with the teacher's soft targets
(``alpha``, ``T``) and with hard labels only (``alpha=0``). Both are evaluated on
``--val-per-class`` validation photos per class; the difference comes with a 95% interval.
Writes ``bench/results/distill.json``. Figures are printed, not asserted.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlkit import freeze_to, load_backbone  # noqa: E402
from tlkit.data import cats_vs_dogs, subset, transforms_for  # noqa: E402
from tlkit.evaluate import difference_interval  # noqa: E402
from tlkit.export import distill  # noqa: E402
from tlkit.export.distill_body import accuracy  # noqa: E402
from tlkit.features import extract_features, train_head  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--val-per-class", type=int, default=100)
    p.add_argument("--student-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--out", default="bench/results/distill.json")
    a = p.parse_args()
    start = time.perf_counter()
    train, val = cats_vs_dogs(download=False)
    train, val = subset(train, per_class=a.per_class), subset(val, per_class=a.val_per_class)
    names = list(train.classes)
    teacher = load_backbone("efficientnet_lite2", num_classes=len(names), class_names=names)
    feats = extract_features(teacher, train.with_transform(transforms_for(teacher)), progress=False)
    teacher.groups["head"].load_state_dict(train_head(feats, epochs=30, lr=1e-3)[0].state_dict())
    teacher_acc = accuracy(teacher.eval(), val.with_transform(transforms_for(teacher)))
    torch.manual_seed(0)
    start_student = load_backbone("efficientnet_lite0", num_classes=len(names), class_names=names)
    freeze_to(start_student, -3)  # stage7, stage8 and the head train
    rows = {}
    for label, alpha in (("distilled", a.alpha), ("hard labels", 0.0)):
        t0 = time.perf_counter()
        student, hist = distill(teacher, copy.deepcopy(start_student), train, val=val, temperature=a.temperature,
                                alpha=alpha, epochs=a.epochs, lr=a.lr, batch_size=32, student_size=a.student_size,
                                train_body=True)
        rows[label] = {"alpha": alpha, "val_acc": max(r["val_acc"] for r in hist.rows),
                       "history": hist.rows, "seconds": round(time.perf_counter() - t0, 1)}
    n = len(val)
    d, h = rows["distilled"]["val_acc"], rows["hard labels"]["val_acc"]
    result = {"teacher": f"efficientnet_lite2 head on {len(train)} photos, 260 px", "teacher_val_acc": teacher_acc,
              "student": f"efficientnet_lite0 at {a.student_size} px, stage7+stage8+head trained",
              "train_images": len(train), "val_images": n, "epochs": a.epochs, "lr": a.lr,
              "temperature": a.temperature, "runs": rows,
              "difference_interval_95": difference_interval(d, h, n),
              "seconds": round(time.perf_counter() - start, 1), "machine": platform.platform(),
              "torch_threads": torch.get_num_threads()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"teacher (Lite2, 260 px) val acc {teacher_acc:.3f} on {n} photos")
    for label, r in rows.items():
        print(f"student {label:<12} (alpha {r['alpha']}): val acc {r['val_acc']:.3f}  ({r['seconds']} s)")
    lo, hi = result["difference_interval_95"]
    print(f"distilled - hard labels: {d - h:+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}]; total {result['seconds']} s")


if __name__ == "__main__":
    main()
