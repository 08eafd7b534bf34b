"""Warm every download the course needs, so that a class never waits on one.

Run it once before a workshop, and Binder runs it while building the image
(``binder/postBuild``). It:

1. finds or downloads the dog-vs-cat dataset (``tlkit.data.cats_vs_dogs``;
   with ``TLKIT_DATA_DIR`` pointing at a local copy nothing is downloaded);
2. loads each backbone's pretrained weights once, which fills the weight
   caches (torchvision's ``~/.cache/torch/hub``; efficientnet_lite0's weights
   already ship with pip). A torchvision download that fails is skipped with
   a warning: the course falls back to efficientnet_lite0, which works offline;
3. with ``--features``, runs each backbone over the train and validation
   images once and stores the pooled features in the feature cache
   (``TLKIT_CACHE_DIR`` or ``~/.cache/tlkit/features``), so that the
   notebooks' feature-extraction cells start instantly.

Example:
    python tools/prefetch.py                         # data + efficientnet_lite0 + resnet18
    python tools/prefetch.py --features              # ... and the feature cache
    python tools/prefetch.py --backbones efficientnet_lite0 --no-data
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

# Running as ``python tools/prefetch.py`` puts tools/ on sys.path, not the repo.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tlkit.backbones import list_backbones, load_backbone  # noqa: E402
from tlkit.errors import WeightsUnavailableError  # noqa: E402
from tlkit.data import cats_vs_dogs, transforms_for  # noqa: E402
from tlkit.feature_cache import default_cache_dir  # noqa: E402
from tlkit.features import extract_features  # noqa: E402

log = logging.getLogger("prefetch")
DEFAULT_BACKBONES = ("efficientnet_lite0", "resnet18")
OFFLINE_BACKBONE = "efficientnet_lite0"  # weights ship in a pip package: must always load


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description="Pre-download the data and weights the tlkit course uses.")
    p.add_argument("--backbones", nargs="+", default=list(DEFAULT_BACKBONES), metavar="NAME",
                   help=f"backbones to warm (default: {' '.join(DEFAULT_BACKBONES)}); "
                        f"choose from {', '.join(list_backbones())}")
    p.add_argument("--features", action="store_true",
                   help="also pre-compute the feature cache of the train and validation images")
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="image size for --features (default: each backbone's own input size)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size for --features (default: 32)")
    p.add_argument("--no-data", action="store_true", help="skip the dataset (weights only)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when anything could not be fetched, not only the essentials")
    args = p.parse_args(argv)
    unknown = [b for b in args.backbones if b not in list_backbones()]
    if unknown:
        p.error(f"unknown backbone(s) {', '.join(unknown)}; choose from {', '.join(list_backbones())}")
    if args.features and args.no_data:
        p.error("--features needs the dataset; drop --no-data")
    return args


def fetch_data():
    """``(train, val)`` of the dog-vs-cat data, or ``None`` with a warning when unavailable."""
    start = time.perf_counter()
    try:
        train, val = cats_vs_dogs()
    except Exception as exc:  # noqa: BLE001 - offline, blocked, disk full: report and carry on
        warnings.warn(f"Dataset not available: {exc}", stacklevel=2)
        return None
    log.info("data: %d train + %d validation images under %s (%.1f s)", len(train), len(val),
             Path(train.files[0]).parents[2], time.perf_counter() - start)
    return train, val


def fetch_weights(names: list[str]) -> dict:
    """``{name: model}`` for every backbone whose pretrained weights loaded.

    A torchvision download that fails is skipped with a warning;
    efficientnet_lite0 failing means a broken install and raises.
    """
    models = {}
    for name in names:
        start = time.perf_counter()
        try:
            models[name] = load_backbone(name, pretrained=True)
        except WeightsUnavailableError as exc:
            if name == OFFLINE_BACKBONE:
                raise
            warnings.warn(f"Skipping {name}: {exc}", stacklevel=2)
            continue
        log.info("weights: %s ready (%.1f s)", name, time.perf_counter() - start)
    return models


def fetch_features(models: dict, data, image_size: int | None, batch_size: int) -> None:
    """Fills the feature cache for each model over both splits (eval transform)."""
    for name, model in models.items():
        tf = transforms_for(model, train=False, image_size=image_size)
        for split in data:
            f = extract_features(model, split.with_transform(tf), batch_size=batch_size,
                                 device="cpu", progress=False)
            how = "already cached" if f.from_cache else f"computed in {f.seconds:.1f} s"
            log.info("features: %s %s %s, %s", name, split.name, tuple(f.features.shape), how)
    log.info("feature cache: %s", default_cache_dir())


def main(argv: list[str] | None = None) -> int:
    """Runs the steps; returns the exit status.

    Missing pieces are warnings (status 0), so a Binder build survives a
    flaky download; with ``--strict`` any missing piece gives status 1.
    """
    logging.basicConfig(level=logging.INFO, format="prefetch: %(message)s")
    args = parse_args(argv)
    ok = True
    data = None
    if not args.no_data:
        data = fetch_data()
        ok = data is not None
    models = fetch_weights(args.backbones)
    missing = [b for b in args.backbones if b not in models]
    if args.features and data is not None:
        fetch_features(models, data, args.image_size, args.batch_size)
    if missing:
        log.info("not available: %s (the notebooks use %s instead)", ", ".join(missing), OFFLINE_BACKBONE)
    if not ok:
        log.info("the dataset is missing; the notebooks will download it on first use, or set "
                 "TLKIT_DATA_DIR to a folder holding cats_and_dogs_filtered/")
    return 1 if args.strict and (not ok or missing) else 0


if __name__ == "__main__":
    sys.exit(main())
