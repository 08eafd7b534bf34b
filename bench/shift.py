"""Accuracy under every built-in shift and severity, before and after AdaBN, for two heads.

    TLKIT_DATA_DIR=../shared/data python bench/shift.py            # all photos, 160 px, every severity
    TLKIT_DATA_DIR=../shared/data python bench/shift.py --quick    # a small sample: a few minutes on 2 cores

Two linear heads on Lite0 (ImageNet weights), trained on the same training photos:

* **imagenet**: on features computed with the ImageNet BatchNorm statistics,
  what ``python -m tlkit train`` does;
* **source**: on features computed after re-estimating the statistics on the
  training photos (``adapt_batchnorm(model, train)``), the setting AdaBN is made for.

For each shift the validation photos are shifted, each head is evaluated with
its own statistics (``before``), then the statistics are re-estimated on the
shifted photos without their labels (``after``; the weights are the same, so
one adapted body serves both heads). Accuracies come with the 95% interval
half-width on the validation photos. Figures, not asserts: your numbers will
differ from run to run of the machine's load, not from run to run of the seed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlkit.adapt import adapted_copy  # noqa: E402
from tlkit.backbones import load_backbone  # noqa: E402
from tlkit.data import cats_vs_dogs, subset, transforms_for  # noqa: E402
from tlkit.evaluate import binomial_interval, predictions_from_features  # noqa: E402
from tlkit.features import extract_features, train_head  # noqa: E402
from tlkit.shift_kinds import SEVERITIES, SHIFTS, ImageShift  # noqa: E402
from tlkit.shifts import shifted  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="50 train / 30 val photos per class, 128 px, severities 1, 3 and 5")
    p.add_argument("--image-size", type=int, default=None, help="default 160 (128 with --quick)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    size = args.image_size or (128 if args.quick else 160)
    severities = (1, 3, 5) if args.quick else SEVERITIES
    train, val = cats_vs_dogs()
    if args.quick:
        train, val = subset(train, 50), subset(val, 30)
    start, load = time.perf_counter(), os.getloadavg()[0]
    model = load_backbone("efficientnet_lite0", num_classes=2, class_names=train.classes)
    tf = transforms_for(model, image_size=size)

    def feats(m, data):
        return extract_features(m, data.with_transform(tf), progress=False, engine="torch")

    source = adapted_copy(model, train.with_transform(tf), progress=False)  # statistics of the training photos
    heads = {}
    for name, body in (("imagenet", model), ("source", source)):
        head, _ = train_head(feats(body, train), feats(body, val), epochs=30, seed=0)
        heads[name] = (body, head)
    n = len(val)

    def acc(head, f) -> float:
        return predictions_from_features(head, f).accuracy

    rows = [{"shift": "none", **{f"{h}_before": acc(head, feats(body, val)) for h, (body, head) in heads.items()}}]
    for shift in (ImageShift(name, s) for name in SHIFTS for s in severities):
        data = shifted(val, shift)
        row = {"shift": repr(shift)}
        for h, (body, head) in heads.items():
            row[f"{h}_before"] = acc(head, feats(body, data))
        adapted = adapted_copy(model, data.with_transform(tf), progress=False)
        after = feats(adapted, data)
        for h, (_, head) in heads.items():
            row[f"{h}_after"] = acc(head, after)
        rows.append(row)
        print_row(row, n, header=len(rows) == 2, first=rows[0])
    print(f"\n{n} validation photos at {size} px; +- is the 95% interval half-width at 0.9 "
          f"({half_width(0.9, n):.3f}). {time.perf_counter() - start:.0f} s; load {load:.1f} -> "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.")
    if args.json:
        args.json.write_text(json.dumps({"n": n, "image_size": size, "rows": rows}, indent=1))
    return 0


def half_width(acc: float, n: int) -> float:
    low, high = binomial_interval(acc, n)
    return (high - low) / 2


def print_row(row: dict, n: int, header: bool, first: dict) -> None:
    cols = ("imagenet_before", "imagenet_after", "source_before", "source_after")
    if header:
        print(f"{'shift':<12}" + "".join(f"{c:>17}" for c in cols))
        print(f"{'none':<12}{first['imagenet_before']:>17.3f}{'':>17}{first['source_before']:>17.3f}")
    print(f"{row['shift']:<12}" + "".join(f"{row[c]:>17.3f}" for c in cols), flush=True)


if __name__ == "__main__":
    sys.exit(main())
