"""tlkit against the peer recipes: same data, same backbone (EfficientNet-Lite0), one run, side by side.

    TLKIT_DATA_DIR=../shared/data python bench/peers.py            # full (~15 min on 2 cores)
    TLKIT_DATA_DIR=../shared/data python bench/peers.py --quick    # reduced, about 5-8 minutes

1. The PyTorch transfer-learning tutorial's "fixed feature extractor" recipe,
   written out plainly below: ImageFolder, RandomResizedCrop(224) + flip for
   training, Resize(256) + CenterCrop(224) for validation, batch 4, SGD (lr 1e-3,
   momentum 0.9), StepLR(7, 0.1). The body is frozen (requires_grad=False) but
   still runs forward every epoch, and ``model.train()`` puts its BatchNorm
   layers in training mode, as in the tutorial.
2. tlkit: ``extract_features`` once (fresh cache), then ``train_head``; cold
   (feature pass included) and warm (cache filled), with tlkit's defaults
   (engine and precision "auto": here int8 on ONNX Runtime, from the verdict
   tlkit ships for Lite0 at 224 px on these photos; without onnxruntime,
   PyTorch in bf16 on CPUs with native bf16, fp32 elsewhere). The cold row
   includes the one-time ONNX export, parity check and quantization. With
   ``--fp32-features`` a third row forces an fp32 feature pass.
3. Fine-tuning training throughput: the tutorial's loop (whole network, batch 4,
   NCHW fp32) against ``tlkit.strategy.train_strategy(..., "finetune")`` defaults
   (batch 32, channels_last, fp32, AdamW, one-cycle, BatchNorm folded into the
   convolutions), both over the same fixed set of training images after a
   warm-up pass, no validation. A second tlkit row turns the folding off
   (``fold_bn=False``) to show what it buys. The three run in turn, twice,
   and medians are reported (``--rounds``).
4. fastai's ``fine_tune(1)`` with the same backbone, if fastai is installed.
5. Partial fine-tuning (stage7, stage8 and a new head train; 224 px; 5 epochs,
   each with a validation pass): the tutorial-style loop, which runs the frozen
   stem..stage6 forward every epoch (batch 4, SGD, StepLR, ``model.train()``),
   against ``train_strategy(..., "partial")`` with its activation cache at the
   freeze boundary (:mod:`tlkit.boundary`, 2 augmented views per photo), cold
   (the cache is filled in the first epoch) and warm (a second run reads it).
   ``--partial-live`` adds tlkit without the cache (fresh augmentation every
   epoch), to show what the cached views cost in accuracy.

Time to accuracy counts training and validation passes, not model loading or
the scan of the image folders. The last two lines are the ratios
(tlkit / tutorial). Targets on the 2-core reference machine:
``ratio_features_time <= 0.1``, ``ratio_finetune_throughput >= 1.5`` and
``ratio_partial_time <= 0.2`` (tlkit cold / tutorial, wall time for the same epochs).
Figures are printed, not asserted. The load average is printed at the start
and the end: on a shared machine the batch-4 tutorial loop slows down far more
than tlkit's larger batches, so compare only runs made on a quiet machine.
"""
from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from tlkit.backbones import load_backbone  # noqa: E402
from tlkit.data import ImageDataset, cats_vs_dogs, subset, transforms_for  # noqa: E402
from tlkit.loaders import num_workers_default  # noqa: E402
from tlkit.device import inference_precision  # noqa: E402
from tlkit.features import extract_features, train_head  # noqa: E402
from tlkit.freezing import freeze  # noqa: E402
from tlkit.strategy import train_strategy  # noqa: E402

BACKBONE = "efficientnet_lite0"
TARGET_ACC = 0.97


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="reduced run: 150+150 train / 100+100 val images, tutorial 1 epoch, "
                        "throughput over 128 images")
    p.add_argument("--epochs", type=int, default=None,
                   help="tutorial epochs (default 8, as in the reference run of ../shared/data/README.md; "
                        "1 with --quick)")
    p.add_argument("--head-epochs", type=int, default=30, help="tlkit train_head epochs (default 30)")
    p.add_argument("--images", type=int, default=None,
                   help="training images timed for throughput (default 384; 128 with --quick)")
    p.add_argument("--warmup", type=int, default=32, help="warm-up images before the throughput pass")
    p.add_argument("--tutorial-workers", type=int, default=4, help="DataLoader workers of the tutorial (its 4)")
    p.add_argument("--skip-finetune", action="store_true", help="skip part 3 (throughput)")
    p.add_argument("--rounds", type=int, default=None,
                   help="throughput rounds, recipes interleaved; medians reported (default 2; 1 with --quick)")
    p.add_argument("--skip-partial", action="store_true", help="skip part 5 (partial fine-tuning)")
    p.add_argument("--partial-epochs", type=int, default=None, help="epochs of part 5 (default 5; 3 with --quick)")
    p.add_argument("--partial-live", action="store_true",
                   help="part 5: add tlkit without the boundary cache (fresh augmentation every epoch)")
    p.add_argument("--fp32-features", action="store_true",
                   help="add a row: tlkit's feature pass forced to fp32 (precision='fp32')")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (1 if args.quick else 8)
    args.images = args.images or (128 if args.quick else 384)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.partial_epochs = args.partial_epochs or (3 if args.quick else 5)
    return args


# ---------------------------------------------------------------------- data
def load_data(quick: bool) -> tuple[ImageDataset, ImageDataset]:
    """tlkit's (train, val); a balanced subset with --quick. The tutorial uses the very same files."""
    train, val = cats_vs_dogs(download=False)
    if quick:
        train, val = subset(train, per_class=150, seed=0), subset(val, per_class=100, seed=0)
    return train, val


def tutorial_folder(ds: ImageDataset, transform) -> torch.utils.data.Dataset:
    """torchvision ImageFolder over the split folder, restricted to ``ds``'s files."""
    from torchvision import datasets

    split_dir = Path(ds.files[0]).parents[1]  # .../train/cats/cat.1.jpg -> .../train
    folder = datasets.ImageFolder(str(split_dir), transform=transform)
    if folder.classes != ds.classes:
        raise ValueError(f"ImageFolder classes {folder.classes} differ from tlkit's {ds.classes}.")
    keep = {os.path.realpath(f) for f in ds.files}
    idx = [i for i, (path, _) in enumerate(folder.samples) if os.path.realpath(path) in keep]
    return torch.utils.data.Subset(folder, idx)


def tutorial_transforms(mean, std) -> dict:
    """The tutorial's preprocessing. Normalised with the backbone's statistics (Lite0's
    weights expect (x - 127) / 128), so the peer is not handicapped by ImageNet's."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(mean, std)]
    return {"train": T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), *norm]),
            "val": T.Compose([T.Resize(256), T.CenterCrop(224), *norm])}


# ---------------------------------------------------------------------- 1. the tutorial
def tutorial_model(frozen_body: bool) -> nn.Module:
    """Lite0 with a new 2-class Linear; ``frozen_body`` sets requires_grad=False on the rest."""
    model = load_backbone(BACKBONE)
    if frozen_body:
        for p in model.parameters():
            p.requires_grad = False
    model.groups["head"] = nn.Linear(model.num_features, 2)  # new layers require grad
    # The tutorial knows nothing of tlkit's BN policy: with no frozen *groups*,
    # Backbone.train() is plain nn.Module.train(), so every BN layer trains.
    if model.frozen_groups:
        raise RuntimeError("tutorial_model must not use tlkit's frozen groups (they change BN behaviour).")
    return model


def run_tutorial(train: ImageDataset, val: ImageDataset, epochs: int, workers: int) -> dict:
    """The fixed-feature-extractor recipe; per epoch (val_acc, seconds since start)."""
    torch.manual_seed(0)
    model = tutorial_model(frozen_body=True)
    tfs = tutorial_transforms(model.mean, model.std)
    sets = {"train": tutorial_folder(train, tfs["train"]), "val": tutorial_folder(val, tfs["val"])}
    loaders = {k: torch.utils.data.DataLoader(d, batch_size=4, shuffle=True, num_workers=workers)
               for k, d in sets.items()}
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.head.parameters(), lr=1e-3, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    curve, best_acc, best_weights, start = [], -1.0, None, time.perf_counter()
    for epoch in range(1, epochs + 1):
        acc = {}
        for phase in ("train", "val"):
            acc[phase] = tutorial_phase(model, loaders[phase], criterion, optimizer, phase == "train")
            if phase == "train":
                scheduler.step()
        if acc["val"] > best_acc:  # the tutorial keeps a copy of the best weights
            best_acc, best_weights = acc["val"], copy.deepcopy(model.state_dict())
        curve.append((acc["val"], time.perf_counter() - start))
        print(f"  tutorial epoch {epoch}/{epochs}: train acc {acc['train']:.4f}  val acc {acc['val']:.4f}  "
              f"{curve[-1][1]:.1f} s since start", flush=True)
    model.load_state_dict(best_weights)
    return {"curve": curve, "best": best_acc}


def tutorial_phase(model, loader, criterion, optimizer, training: bool) -> float:
    """One pass over a loader, as the tutorial's loop does it; returns the accuracy."""
    model.train() if training else model.eval()
    correct, seen = 0, 0
    for x, y in loader:  # x: (4, 3, 224, 224) NCHW fp32
        optimizer.zero_grad()
        with torch.set_grad_enabled(training):
            logits = model(x)
            loss = criterion(logits, y)
            if training:
                loss.backward()
                optimizer.step()
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return correct / seen


# ---------------------------------------------------------------------- 2. tlkit on cached features
def run_tlkit_features(train: ImageDataset, val: ImageDataset, head_epochs: int, fp32: bool = False) -> dict:
    """Cold (fresh cache: feature pass + head) and warm (cache filled) runs with tlkit's defaults;
    ``fp32``: a third, cold run with the feature pass forced to fp32."""
    model = load_backbone(BACKBONE, num_classes=2, class_names=train.classes)
    freeze(model, model.group_names[:-1])
    tf = transforms_for(model, train=False)  # features are cached, so no augmentation
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("cold", "warm", "cold, fp32")[:3 if fp32 else 2]:
            precision = "fp32" if "fp32" in label else "auto"  # the cache key includes the precision
            start = time.perf_counter()
            ftr = extract_features(model, train.with_transform(tf), cache_dir=tmp, progress=False, precision=precision)
            fva = extract_features(model, val.with_transform(tf), cache_dir=tmp, progress=False, precision=precision)
            features_s = time.perf_counter() - start
            _, hist = train_head(ftr, fva, epochs=head_epochs, lr=1e-3, seed=0)
            out[label] = time_to_target(hist, features_s, ftr.from_cache and fva.from_cache)
            print(f"  tlkit {label}: features {features_s:.1f} s ({fva.engine} {fva.precision}; "
                  f"from cache: {out[label]['from_cache']}), "
                  f"head {sum(hist['seconds']):.2f} s for {len(hist)} epochs, "
                  f"best val acc {out[label]['best']:.4f}", flush=True)
    return out


def time_to_target(hist, features_s: float, from_cache: bool) -> dict:
    """Seconds until the first head epoch at TARGET_ACC: the feature pass plus head epochs so far."""
    accs, secs = hist["val_acc"], hist["seconds"]
    first = next((i for i, a in enumerate(accs) if a >= TARGET_ACC), None)
    upto = len(accs) if first is None else first + 1
    return {"reached_epoch": None if first is None else first + 1, "seconds": features_s + sum(secs[:upto]),
            "features_s": features_s, "final": accs[-1], "best": max(accs), "epochs": len(accs),
            "from_cache": from_cache}


# ---------------------------------------------------------------------- 3. fine-tuning throughput
def tutorial_finetune_throughput(warm: ImageDataset, timed: ImageDataset, workers: int) -> float:
    """Images/s of the tutorial loop training the whole network (batch 4, NCHW fp32)."""
    torch.manual_seed(0)
    model = tutorial_model(frozen_body=False)
    tf = tutorial_transforms(model.mean, model.std)["train"]
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    rates = []
    for ds in (warm, timed):  # each pass builds its loader, as an epoch does (workers start included)
        loader = torch.utils.data.DataLoader(tutorial_folder(ds, tf), batch_size=4, shuffle=True,
                                             num_workers=workers)
        start = time.perf_counter()
        tutorial_phase(model, loader, criterion, optimizer, training=True)
        rates.append(len(ds) / (time.perf_counter() - start))
    return rates[-1]


def tlkit_finetune_throughput(warm: ImageDataset, timed: ImageDataset, **options) -> float:
    """Images/s of tlkit's trainer, strategy "finetune" with its defaults (History's img_per_s).

    ``options`` override defaults of :class:`tlkit.train.TrainConfig` (e.g. ``fold_bn=False``).
    """
    model = load_backbone(BACKBONE, num_classes=2, class_names=warm.classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. one-cycle on a 1-batch warm-up epoch
        train_strategy(model, "finetune", warm, epochs=1, progress=False, seed=0, **options)
        hist = train_strategy(model, "finetune", timed, epochs=1, progress=False, seed=0, **options)
    return hist.last()["img_per_s"]


def print_throughput(args: argparse.Namespace, warm: ImageDataset, timed: ImageDataset) -> float:
    """Part 3 table; returns ratio_finetune_throughput (tlkit defaults / tutorial).

    The three recipes run in turn, ``args.rounds`` times, and the table shows each one's
    median: this machine's speed drifts by 20% or more over minutes, and interleaving
    keeps a slow minute from landing on one recipe only.
    """
    recipes = [("PyTorch tutorial loop (all layers)", 4, "NCHW fp32, SGD", args.tutorial_workers,
                lambda: tutorial_finetune_throughput(warm, timed, args.tutorial_workers)),
               ("tlkit train_strategy finetune", 32, "channels_last fp32, BN folded", num_workers_default(),
                lambda: tlkit_finetune_throughput(warm, timed)),
               ("tlkit, same, fold_bn=False", 32, "channels_last fp32", num_workers_default(),
                lambda: tlkit_finetune_throughput(warm, timed, fold_bn=False))]
    runs: list[list[float]] = [[] for _ in recipes]
    for r in range(args.rounds):
        for i, recipe in enumerate(recipes):
            runs[i].append(recipe[4]())
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{ips[-1]:.2f}" for ips in runs) +
              f" img/s; peak RSS so far: {peak_rss_mb()[0]:,.0f} MiB", flush=True)
    med = [statistics.median(ips) for ips in runs]
    print(f"{'recipe':<36}{'batch':>6}  {'layout / precision':<31}{'workers':>8}{'img/s (median)':>16}")
    for (name, batch, layout, workers, _), ips in zip(recipes, med):
        print(f"{name:<36}{batch:>6}  {layout:<31}{workers:>8}{ips:>16.2f}")
    print("note: the tutorial uses its own 4 workers, tlkit its default (num_workers_default()); JPEG decoding "
          "and augmentation included; each pass starts its loader. The ratio uses tlkit's default row.")
    print(f"note: without BatchNorm folding the ratio would be {med[2] / med[0]:.2f}.")
    return med[1] / med[0]


# ---------------------------------------------------------------------- 4. fastai
def run_fastai(train: ImageDataset, quick: bool) -> str:
    """fastai's fine_tune(1) with the Lite0 body, if fastai is installed (never installed here)."""
    try:
        import fastai  # noqa: F401
    except ImportError:
        return "fastai: not installed (skipped)"
    try:  # not exercised on the reference machine (fastai absent); report any failure, do not crash
        from fastai.vision.all import (ImageDataLoaders, Learner, Normalize, Resize, accuracy,
                                       aug_transforms)

        model = load_backbone(BACKBONE, num_classes=2)
        root = Path(train.files[0]).parents[2]
        dls = ImageDataLoaders.from_folder(root, train="train", valid="validation", item_tfms=Resize(256),
                                           batch_tfms=[*aug_transforms(size=224),
                                                       Normalize.from_stats(model.mean, model.std)])
        body = [p for g in model.group_names[:-1] for p in model.groups[g].parameters()]
        learn = Learner(dls, model, metrics=accuracy, splitter=lambda m: [body, list(m.head.parameters())])
        start = time.perf_counter()
        learn.fine_tune(1)
        seconds = time.perf_counter() - start
        acc = float(learn.validate()[1])
        note = " (full data; --quick does not reduce it)" if quick else ""
        return f"fastai fine_tune(1): {seconds:.1f} s, val acc {acc:.4f}{note}"
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
        return f"fastai: failed ({type(exc).__name__}: {exc})"


# ---------------------------------------------------------------------- 5. partial fine-tuning
PARTIAL_TRAINS = ("stage7", "stage8")  # what train_strategy "partial" trains, besides the head


def tutorial_partial(train: ImageDataset, val: ImageDataset, epochs: int, workers: int) -> dict:
    """The tutorial's loop with only stage7, stage8 and a new head trainable: the frozen part runs every epoch."""
    torch.manual_seed(0)
    model = tutorial_model(frozen_body=True)
    for g in PARTIAL_TRAINS:
        for p in model.groups[g].parameters():
            p.requires_grad = True
    tfs = tutorial_transforms(model.mean, model.std)
    loaders = {k: torch.utils.data.DataLoader(tutorial_folder(d, tfs[k]), batch_size=4, shuffle=True,
                                              num_workers=workers) for k, d in (("train", train), ("val", val))}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    criterion, accs, start = nn.CrossEntropyLoss(), [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        tutorial_phase(model, loaders["train"], criterion, optimizer, training=True)
        scheduler.step()
        accs.append(tutorial_phase(model, loaders["val"], criterion, optimizer, training=False))
        print(f"  tutorial partial epoch {epoch}/{epochs}: val acc {accs[-1]:.4f}  "
              f"{time.perf_counter() - start:.1f} s since start", flush=True)
    return {"seconds": time.perf_counter() - start, "best": max(accs), "final": accs[-1]}


def tlkit_partial(train: ImageDataset, val: ImageDataset, epochs: int, cache_dir, cache=True) -> dict:
    """``train_strategy(model, "partial")`` with its defaults; ``cache``: the boundary cache (in ``cache_dir``)."""
    torch.manual_seed(0)  # the new head's initial weights: the same in every row
    model = load_backbone(BACKBONE, num_classes=2, class_names=train.classes)
    start = time.perf_counter()
    hist = train_strategy(model, "partial", train, val, epochs=epochs, progress=False, seed=0,
                          cache_boundary={"cache_dir": cache_dir} if cache else False)
    return {"seconds": time.perf_counter() - start, "best": max(hist["val_acc"]), "final": hist["val_acc"][-1]}


def print_partial(args: argparse.Namespace, train: ImageDataset, val: ImageDataset) -> float:
    """Part 5 table; returns ratio_partial_time (tlkit cold / tutorial)."""
    from tlkit.boundary import activation_bytes

    rows = {"PyTorch tutorial loop, frozen part live": tutorial_partial(train, val, args.partial_epochs,
                                                                         args.tutorial_workers)}
    with tempfile.TemporaryDirectory() as tmp:
        for label in ("cold", "warm"):
            rows[f"tlkit partial, boundary cache {label}"] = r = tlkit_partial(train, val, args.partial_epochs, tmp)
            print(f"  tlkit {label}: {r['seconds']:.1f} s, best val acc {r['best']:.4f}; peak RSS so far "
                  f"{peak_rss_mb()[0]:,.0f} MiB", flush=True)
    if args.partial_live:
        rows["tlkit partial, no cache (fresh aug.)"] = tlkit_partial(train, val, args.partial_epochs, None, False)
    print(f"{'recipe':<44}{'seconds':>9}{'best acc':>10}{'final acc':>11}")
    for name, r in rows.items():
        print(f"{name:<44}{r['seconds']:>9.1f}{r['best']:>10.4f}{r['final']:>11.4f}")
    mib = activation_bytes(load_backbone(BACKBONE, pretrained=False), "stage7", 224, len(train), views=2) / 2**20
    print(f"note: {args.partial_epochs} epochs each, validation included; the cache holds 2 fp16 views of "
          f"{len(train)} photos at stage7 ({mib:.0f} MiB) plus one of the {len(val)} validation photos.")
    tut = rows["PyTorch tutorial loop, frozen part live"]["seconds"]
    print(f"note: warm cache: ratio {rows['tlkit partial, boundary cache warm']['seconds'] / tut:.3f}.")
    return rows["tlkit partial, boundary cache cold"]["seconds"] / tut


# ---------------------------------------------------------------------- report
def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest child (DataLoader workers), MiB."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def load_average() -> str:
    """1, 5 and 15 minute load averages: above the core count, timings are not comparable."""
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def print_features_table(tut: dict, tl: dict, epochs: int) -> float:
    """Part 1+2 table; returns ratio_features_time."""
    reached = next((i for i, (a, _) in enumerate(tut["curve"]) if a >= TARGET_ACC), None)
    tut_s = tut["curve"][-1][1] if reached is None else tut["curve"][reached][1]
    when = f"never in {epochs} ep" if reached is None else f"epoch {reached + 1}"
    print(f"\n{'recipe':<38}{'reaches 0.97':>16}{'seconds':>10}{'final acc':>11}{'best acc':>10}")
    print(f"{'PyTorch tutorial, fixed extractor':<38}{when:>16}{tut_s:>10.1f}"
          f"{tut['curve'][-1][0]:>11.4f}{tut['best']:>10.4f}")
    for label in tl:
        r = tl[label]
        w = f"head epoch {r['reached_epoch']}" if r["reached_epoch"] else f"never in {r['epochs']}"
        print(f"{'tlkit features+head, ' + label:<38}{w:>16}{r['seconds']:>10.2f}{r['final']:>11.4f}"
              f"{r['best']:>10.4f}")
    if reached is None:
        print(f"note: the tutorial never reached {TARGET_ACC} in {epochs} epoch(s); its total time for those "
              "epochs is used, so ratio_features_time is an upper bound (its real time to 0.97 is longer).")
    if "cold, fp32" in tl:
        print(f"note: with an fp32 feature pass, ratio_features_time would be "
              f"{tl['cold, fp32']['seconds'] / tut_s:.3f}.")
    if tl["cold"]["reached_epoch"] is None:
        print(f"note: tlkit never reached {TARGET_ACC} either; its total time (features + all head epochs) is used.")
    print("note: tutorial model.train() puts the frozen body's BatchNorm in training mode (batch-4 statistics "
          "overwrite the ImageNet running stats) and turns on Lite0's stochastic depth; that is the tutorial's "
          "behaviour, kept on purpose. tlkit keeps frozen BN in eval mode. Both normalise with Lite0's mean/std.")
    return tl["cold"]["seconds"] / tut_s


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    # The tutorial asks for 4 workers; torch warns on a 2-core machine. Known, and kept on purpose.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    train, val = load_data(args.quick)
    print(f"peers benchmark ({'QUICK: reduced, ratios not comparable to targets' if args.quick else 'full'}): "
          f"{BACKBONE}, 224 px, {len(train)} train / {len(val)} val images, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load_average()}, "
          f"PyTorch's feature precision here: {inference_precision(torch.device('cpu'))} (the engine and precision "
          "tlkit's rows used are printed with them)", flush=True)
    if args.quick:
        print(f"quick: 150/class train, 100/class val (same files for every recipe), tutorial {args.epochs} "
              f"epoch(s), throughput over {args.images} images", flush=True)

    print("\n== 1-2. Feature extraction: time to 0.97 validation accuracy", flush=True)
    tut = run_tutorial(train, val, args.epochs, args.tutorial_workers)
    print(f"  peak RSS so far: {peak_rss_mb()[0]:,.0f} MiB", flush=True)
    tl = run_tlkit_features(train, val, args.head_epochs, args.fp32_features)
    ratio_features = print_features_table(tut, tl, args.epochs)
    print(f"peak RSS so far: {peak_rss_mb()[0]:,.0f} MiB", flush=True)

    ratio_ft = float("nan")
    if not args.skip_finetune:
        print(f"\n== 3. Fine-tuning training throughput (224 px, {args.images} images after a "
              f"{args.warmup}-image warm-up pass; no validation)", flush=True)
        per = max(1, args.images // 2)
        full_train = cats_vs_dogs(download=False)[0]
        warm, timed = subset(full_train, max(1, args.warmup // 2), seed=2), subset(full_train, per, seed=1)
        ratio_ft = print_throughput(args, warm, timed)

    print("\n== 4. fastai")
    print(run_fastai(train, args.quick))

    ratio_partial = float("nan")
    if not args.skip_partial:
        print(f"\n== 5. Partial fine-tuning (stage7, stage8 + head, 224 px, {args.partial_epochs} epochs)", flush=True)
        ratio_partial = print_partial(args, train, val)
    self_mb, child_mb = peak_rss_mb()
    print(f"\npeak RSS: {self_mb:,.0f} MiB (this process), {child_mb:,.0f} MiB (largest DataLoader worker); "
          f"load average now {load_average()}")
    print(f"ratio_features_time = {ratio_features:.3f}")
    print(f"ratio_finetune_throughput = {ratio_ft:.2f}")
    print(f"ratio_partial_time = {ratio_partial:.3f}")


if __name__ == "__main__":
    main()
