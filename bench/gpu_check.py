"""GPU check: how close tlkit gets to the hardware limit for EfficientNet-Lite0 at 224 px.

    TLKIT_DATA_DIR=/path/with/cats_and_dogs_filtered python bench/gpu_check.py
    python bench/gpu_check.py --cpu-smoke        # tiny sizes on the CPU: checks the script itself

Measures, on one CUDA GPU, with bf16 autocast and channels_last:

a. the bare training step (forward, backward, AdamW) on random tensors already
   on the GPU: the limit for this model, batch and resolution;
b. ``tlkit.train.fit`` end to end on the real JPEGs (3 epochs, the last one timed; decoding and
   augmentation in DataLoader workers), with tlkit's default number of workers
   on a GPU (one per spare CPU core, at most 16) and its CPU default (at most 4);
c. ``tlkit.features.extract_features`` (no cache) against the bare forward pass.

Also a bench-only loop that decodes the JPEGs on the GPU every epoch (``decode_jpeg``),
to compare with ``decode_once``. Prints a table (images per second) with the GPU's name
and writes the figures to ``bench/results/gpu.json``. Targets: (b) >= 90% of (a), and
(c) >= 70% of its bare forward pass; the bare step on an H100 reached 5,157 img/s. Without
CUDA it prints a message and exits with status 0. Without the real data it
writes synthetic JPEGs (smooth random colours: they decode at a different speed
than photos; the table says so). Figures are printed, not asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
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
from tlkit.data import ImageDataset, cats_vs_dogs, image_folder, subset  # noqa: E402
from tlkit.loaders import num_workers_default  # noqa: E402
from tlkit.data import transforms_for  # noqa: E402
from tlkit.device import autocast, memory_format  # noqa: E402
from tlkit.features import extract_features  # noqa: E402
from tlkit.train import fit  # noqa: E402

BACKBONE = "efficientnet_lite0"
EPOCHS = 3  # timed epochs of each fit measurement


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true",
                   help="run every measurement on the CPU at tiny sizes (batch 4, 64 px, 16 images)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=20, help="timed steps of the bare measurements")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    p.add_argument("--workers", type=int, nargs="*", default=None,
                   help="DataLoader workers for (b); default: tlkit's GPU default (num_workers_default(gpu=True): "
                        "every core but one, at most 16) and its CPU default (at most 4)")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "gpu.json"),
                   help="where to write the figures as JSON (default: bench/results/gpu.json)")
    p.add_argument("--profile-out", default=None, help="write a torch.profiler table of a decode_once "
                   "epoch here when fine-tuning misses 90%% of the bare step")
    p.add_argument("--data-dir", default=None, help="folder holding cats_and_dogs_filtered/ "
                   "(default: $TLKIT_DATA_DIR, then synthetic JPEGs)")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.batch, args.image_size, args.steps, args.warmup = 4, 64, 2, 1
    if args.workers is None:
        args.workers = sorted({num_workers_default(), num_workers_default(gpu=not args.cpu_smoke)})
    return args


# ---------------------------------------------------------------------- data
def load_data(args: argparse.Namespace, tmp: Path) -> tuple[ImageDataset, ImageDataset, str]:
    """(train, val, description): the real data if found, else synthetic JPEGs."""
    try:
        train, val = cats_vs_dogs(root=args.data_dir, download=False)
        label = "real JPEGs"
    except FileNotFoundError:
        per_class = 8 if args.cpu_smoke else 1000
        write_synthetic(tmp / "synthetic", per_class)
        train, val = image_folder(tmp / "synthetic")
        label = "SYNTHETIC noise JPEGs (real data not found)"
    if args.cpu_smoke:
        train, val = subset(train, per_class=8), subset(val, per_class=4)
    return train, val, label


def write_synthetic(root: Path, per_class: int) -> None:
    """256x256 JPEGs of smooth random colours: train/{cats,dogs}, validation/{cats,dogs}."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("validation", max(1, per_class // 2))):
        for cls in ("cats", "dogs"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(small).resize((256, 256), Image.BILINEAR).save(folder / f"{i}.jpg", quality=85)


# ---------------------------------------------------------------------- measurements
def timed(fn, device: torch.device, steps: int, warmup: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_train_step(device: torch.device, args: argparse.Namespace) -> float:
    """(a) img/s of forward + backward + AdamW on random tensors resident on the device."""
    model = load_backbone(BACKBONE, pretrained=not args.cpu_smoke, num_classes=2)
    model.to(device, memory_format=memory_format(device)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=memory_format(device))  # (B, 3, H, W) channels_last
    y = torch.randint(0, 2, (args.batch,), device=device)

    def step() -> None:
        with autocast(device):  # bf16 on CUDA
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return args.batch / timed(step, device, args.steps, args.warmup)


def bare_forward(device: torch.device, args: argparse.Namespace) -> float:
    """(c, limit) img/s of forward_pooled alone on random tensors, eval mode, no grad."""
    model = load_backbone(BACKBONE, pretrained=not args.cpu_smoke).eval()
    model.to(device, memory_format=memory_format(device))
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=memory_format(device))

    @torch.no_grad()
    def forward() -> None:
        with autocast(device):
            model.forward_pooled(x)

    return args.batch / timed(forward, device, args.steps, args.warmup)


def tlkit_fit(train: ImageDataset, device: torch.device, args: argparse.Namespace, workers: int,
              decode_once: bool = False) -> dict:
    """(b) tlkit.train.fit on the JPEGs for EPOCHS epochs, after a short warm-up fit (cuDNN, allocator).

    With ``decode_once`` the images are decoded into a uint8 tensor on the GPU before the epoch's
    clock starts (History's img_per_s); the wall figure includes that decoding."""
    model = load_backbone(BACKBONE, pretrained=not args.cpu_smoke, num_classes=2)
    opts = dict(batch_size=args.batch, device=device, image_size=args.image_size, num_workers=workers,
                progress=False, seed=0, decode_once=decode_once)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(model, subset(train, per_class=max(1, args.batch // 2), seed=1), epochs=1, **opts)
        sync(device)
        start = time.perf_counter()
        hist = fit(model, train, epochs=EPOCHS, **opts)
        sync(device)
    # 2,000 images are under a second of work on a big GPU, so one epoch is dominated by starting the
    # loader; the last of EPOCHS epochs is the steady state.
    return {"img_per_s": hist.last()["img_per_s"],
            "wall_img_per_s": EPOCHS * len(train) / (time.perf_counter() - start)}


def tlkit_features(data: ImageDataset, device: torch.device, args: argparse.Namespace) -> float:
    """(c) img/s of extract_features (JPEG decoding included, no cache), after a warm-up call."""
    model = load_backbone(BACKBONE, pretrained=not args.cpu_smoke)
    tf = transforms_for(model, train=False, image_size=args.image_size)
    warm = subset(data, per_class=max(1, args.batch // 2), seed=1).with_transform(tf)
    extract_features(model, warm, batch_size=args.batch, device=device, cache=False, progress=False)
    feats = extract_features(model, data.with_transform(tf), batch_size=args.batch, device=device,
                             cache=False, progress=False)
    return len(feats) / feats.seconds


def gpu_decode_epoch(train: ImageDataset, device: torch.device, args: argparse.Namespace) -> float:
    """(b, variant) img/s of one epoch that decodes the JPEGs on the GPU every batch.

    A bench-only loop, not a tlkit path: ``torchvision.io.decode_jpeg(device="cuda")`` on the file
    bytes (read once into memory), a resize to the training size and a random flip on the GPU, then
    the same step as (a). It tells whether GPU decoding would beat ``decode_once``."""
    from torchvision.io import decode_jpeg, read_file

    model = load_backbone(BACKBONE, pretrained=not args.cpu_smoke, num_classes=2)
    model.to(device, memory_format=memory_format(device)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(model.std, device=device).view(1, 3, 1, 1) * 255
    blobs = [read_file(str(f)) for f in train.files]  # compressed bytes, read once
    targets = torch.tensor(train.targets, device=device)
    size = (args.image_size, args.image_size)

    def batch(idx: torch.Tensor) -> torch.Tensor:
        imgs = decode_jpeg([blobs[i] for i in idx.tolist()], device=device)  # list of (3, H, W) uint8
        x = torch.stack([nn.functional.interpolate(im[None].float(), size=size, mode="bilinear",
                                                   antialias=True)[0] for im in imgs])
        flip = torch.rand(len(x), device=device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return ((x - mean) / std).contiguous(memory_format=memory_format(device))

    def epoch(n_batches: int | None = None) -> int:
        order = torch.randperm(len(blobs))
        done = 0
        for k, start in enumerate(range(0, len(order), args.batch)):
            if n_batches is not None and k >= n_batches:
                break
            idx = order[start:start + args.batch]
            with autocast(device):
                loss = nn.functional.cross_entropy(model(batch(idx)), targets[idx.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += len(idx)
        return done

    epoch(2)  # warm-up: cuDNN autotuning, nvjpeg handles, allocator
    sync(device)
    start = time.perf_counter()
    n = epoch()
    sync(device)
    return n / (time.perf_counter() - start)


def profile_decode_once(train: ImageDataset, device: torch.device, args: argparse.Namespace, out: str) -> None:
    """Write torch.profiler's top operators (by CUDA and by CPU time) for one decode_once epoch."""
    from torch.profiler import ProfilerActivity, profile

    model = load_backbone(BACKBONE, pretrained=not args.cpu_smoke, num_classes=2)
    opts = dict(batch_size=args.batch, device=device, image_size=args.image_size, num_workers=0,
                progress=False, seed=0, decode_once=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(model, subset(train, per_class=max(1, args.batch // 2), seed=1), epochs=1, **opts)
        with profile(activities=activities) as prof:
            fit(model, train, epochs=1, **opts)
            sync(device)
    sort_cuda = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    with open(out, "w") as f:
        f.write(prof.key_averages().table(sort_by=sort_cuda, row_limit=25))
        f.write("\n\n")
        f.write(prof.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    print(f"profile written to {out}")


# ---------------------------------------------------------------------- report
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU smoke test ({os.cpu_count()} cores), not a GPU measurement"


def driver_version() -> str | None:
    """The NVIDIA driver version from nvidia-smi, or None where there is none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def measure(args: argparse.Namespace, device: torch.device, train: ImageDataset,
            both: ImageDataset) -> list[tuple[str, str, float, str]]:
    """Every row: (key, label, img/s, note). Keys starting with "fit" are tlkit fine-tuning settings."""
    rows = [("bare_step", "a. bare train step (random tensors)", bare_train_step(device, args), "the limit")]
    for w in args.workers:
        r = tlkit_fit(train, device, args, w)
        rows.append((f"fit_workers_{w}", f"b. tlkit fit, {w} workers", r["img_per_s"],
                     f"wall incl. setup {r['wall_img_per_s']:,.0f} img/s"))
    r = tlkit_fit(train, device, args, 0, decode_once=True)
    rows.append(("fit_decode_once", "b. tlkit fit, decode_once=True", r["img_per_s"],
                 f"wall incl. decoding {r['wall_img_per_s']:,.0f} img/s"))
    if device.type == "cuda":
        rows.append(("gpu_decode", "b'. bench loop, decode_jpeg on the GPU", gpu_decode_epoch(train, device, args),
                     "every epoch; not a tlkit path"))
    rows.append(("bare_forward", "c. bare forward_pooled (random)", bare_forward(device, args), "the limit"))
    rows.append(("features", "c. tlkit extract_features (JPEGs)", tlkit_features(both, device, args),
                 f"{len(both)} images, no cache"))
    return rows


def summary(rows, device: torch.device, args: argparse.Namespace, data_label: str) -> dict:
    """The figures issue 21 asks for, as one JSON-able dict."""
    by = {key: ips for key, _, ips, _ in rows}
    fits = {key: ips for key, ips in by.items() if key.startswith("fit_")}
    best = max(fits, key=fits.get)
    return {
        "device": device_name(device), "driver": driver_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "model": BACKBONE, "image_size": args.image_size, "batch": args.batch,
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32", "channels_last": True,
        "data": data_label, "cpu_cores": os.cpu_count(),
        "bare_step_img_s": round(by["bare_step"], 1), "finetune_img_s": round(fits[best], 1),
        "finetune_setting": best, "finetune_over_bare": round(fits[best] / by["bare_step"], 3),
        "bare_forward_img_s": round(by["bare_forward"], 1), "features_img_s": round(by["features"], 1),
        "features_over_bare": round(by["features"] / by["bare_forward"], 3),
        "gpu_decode_img_s": round(by["gpu_decode"], 1) if "gpu_decode" in by else None,
        "all_rows_img_s": {key: round(ips, 1) for key, ips in by.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible, so there is nothing to measure. Run it on a machine with a "
              "GPU, or pass --cpu-smoke to check the script itself on the CPU at tiny sizes.")
        return 0
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        train, val, data_label = load_data(args, Path(tmp))
        both = ImageDataset(train.files + val.files, train.targets + val.targets, train.classes, name="train+val")
        rows = measure(args, device, train, both)
        result = summary(rows, device, args, data_label)
        print_table(rows, result, args, len(train))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
            print(f"figures written to {args.json}")
        if args.profile_out and result["finetune_over_bare"] < 0.9:
            profile_decode_once(train, device, args, args.profile_out)
    return 0


def print_table(rows, result: dict, args: argparse.Namespace, n_train: int) -> None:
    print(f"\ndevice: {result['device']}, driver {result['driver']}")
    print(f"model: {BACKBONE}, {args.image_size} px, batch {args.batch}, {result['precision']}, channels_last, "
          f"torch {torch.__version__}, cudnn.benchmark={torch.backends.cudnn.benchmark}")
    print(f"data: {result['data']}, {n_train} training images; CPU cores: {os.cpu_count()}")
    print(f"{'measurement':<42}{'img/s':>10}  note")
    for _, label, ips, note in rows:
        print(f"{label:<42}{ips:>10,.1f}  {note}")
    print(f"finetune_img_s = {result['finetune_img_s']:.1f} ({result['finetune_setting']})")
    print(f"finetune_over_bare = {result['finetune_over_bare']:.3f}   (target >= 0.90)")
    print(f"features_over_bare = {result['features_over_bare']:.3f}   (target >= 0.70)")


if __name__ == "__main__":
    sys.exit(main())
