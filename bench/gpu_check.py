"""GPU check: how close tlkit gets to the hardware limit for EfficientNet-Lite0 at 224 px.

    TLKIT_DATA_DIR=/path/with/cats_and_dogs_filtered python bench/gpu_check.py
    python bench/gpu_check.py --cpu-smoke        # tiny sizes on the CPU: checks the script itself

Measures, on one CUDA GPU, with bf16 autocast and channels_last:

a. the bare training step (forward, backward, AdamW) on random tensors already
   on the GPU: the limit for this model, batch and resolution;
b. ``tlkit.train.fit`` end to end on the real JPEGs (1 epoch, decoding and
   augmentation in DataLoader workers), with tlkit's default number of workers
   on a GPU (one per spare CPU core, at most 16) and its CPU default (at most 4);
c. ``tlkit.features.extract_features`` (no cache) against the bare forward pass.

Prints a table (images per second) with the GPU's name. Target: >= 4,000 img/s
end to end for (b); the bare step on an H100 reached 5,157 img/s. Without
CUDA it prints a message and exits with status 0. Without the real data it
writes synthetic JPEGs (smooth random colours: they decode at a different speed
than photos; the table says so). Figures are printed, not asserted.
"""
from __future__ import annotations

import argparse
import os
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
TARGET_IMG_S = 4000


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
    """(b) one epoch of tlkit.train.fit on the JPEGs, after a short warm-up fit (cuDNN, allocator).

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
        hist = fit(model, train, epochs=1, **opts)
        sync(device)
    return {"img_per_s": hist.last()["img_per_s"], "wall_img_per_s": len(train) / (time.perf_counter() - start)}


def tlkit_features(data: ImageDataset, device: torch.device, args: argparse.Namespace) -> float:
    """(c) img/s of extract_features (JPEG decoding included, no cache), after a warm-up call."""
    model = load_backbone(BACKBONE, pretrained=not args.cpu_smoke)
    tf = transforms_for(model, train=False, image_size=args.image_size)
    warm = subset(data, per_class=max(1, args.batch // 2), seed=1).with_transform(tf)
    extract_features(model, warm, batch_size=args.batch, device=device, cache=False, progress=False)
    feats = extract_features(model, data.with_transform(tf), batch_size=args.batch, device=device,
                             cache=False, progress=False)
    return len(feats) / feats.seconds


# ---------------------------------------------------------------------- report
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU smoke test ({os.cpu_count()} cores), not a GPU measurement"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible, so there is nothing to measure. Run it on a machine with a "
              "GPU, or pass --cpu-smoke to check the script itself on the CPU at tiny sizes.")
        return 0
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    torch.manual_seed(0)
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        train, val, data_label = load_data(args, Path(tmp))
        both = ImageDataset(train.files + val.files, train.targets + val.targets, train.classes, name="train+val")
        rows.append(("a. bare train step (random tensors)", bare_train_step(device, args), "the limit"))
        for w in args.workers:
            r = tlkit_fit(train, device, args, w)
            rows.append((f"b. tlkit fit, 1 epoch, {w} workers", r["img_per_s"],
                         f"wall incl. setup {r['wall_img_per_s']:,.0f} img/s; target >= {TARGET_IMG_S:,}"))
        r = tlkit_fit(train, device, args, 0, decode_once=True)
        rows.append(("b. tlkit fit, decode_once=True", r["img_per_s"],
                     f"wall incl. decoding {r['wall_img_per_s']:,.0f} img/s; target >= {TARGET_IMG_S:,}"))
        rows.append(("c. bare forward_pooled (random)", bare_forward(device, args), "the limit"))
        rows.append(("c. tlkit extract_features (JPEGs)", tlkit_features(both, device, args),
                     f"{len(both)} images, no cache"))
    print_table(rows, device, args, data_label, len(train))
    return 0


def print_table(rows, device: torch.device, args: argparse.Namespace, data_label: str, n_train: int) -> None:
    prec = "bf16 autocast" if device.type == "cuda" else "fp32 (CPU)"
    print(f"\ndevice: {device_name(device)}")
    print(f"model: {BACKBONE}, {args.image_size} px, batch {args.batch}, {prec}, channels_last, "
          f"torch {torch.__version__}, cudnn.benchmark={torch.backends.cudnn.benchmark}")
    print(f"data: {data_label}, {n_train} training images; CPU cores: {os.cpu_count()}")
    print(f"{'measurement':<40}{'img/s':>10}  note")
    for name, ips, note in rows:
        print(f"{name:<40}{ips:>10,.1f}  {note}")
    best_fit = max((ips for name, ips, _ in rows if name.startswith("b.")), default=float("nan"))
    print(f"fit_img_per_s = {best_fit:.1f}")
    print(f"fit_over_bare_step = {best_fit / rows[0][1]:.3f}")


if __name__ == "__main__":
    sys.exit(main())
