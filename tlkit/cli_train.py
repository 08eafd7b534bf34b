"""``train`` and ``demo``'s work after the arguments are checked: build, train, write the run folder.

:func:`run_training` builds the model, trains it with the chosen strategy
(cached features for ``features``; :func:`tlkit.strategy.train_strategy` for
``partial`` and ``finetune``) and writes ``metrics.json``, ``model.pt`` and the
confusion matrix PNG. :mod:`tlkit.__main__` parses and checks the arguments.

Example:
    >>> run_training(args, train, val, "cats_and_dogs_filtered")["val_accuracy"]   # int8 features (0.991 in fp32)
    0.988
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

# Text fine-tuning (--strategy partial|finetune on text): AdamW, the top body group at 4e-5 (lower groups
# spread down to 4e-6), the head at TEXT_HEAD_LR, batch 32, 64 tokens, one epoch, one-cycle schedule.
# Measured on rt-polaritydata (7,730 train / 1,932 val, seed 0), 2 shared cores: 0.812 validation accuracy,
# 373 CPU-seconds (8.7 min wall at a 71% share under load 5); frozen features + head: 0.776.
TEXT_FINETUNE_LR = 4e-5
TEXT_HEAD_LR = 1e-3


def run_training(args: argparse.Namespace, train, val, dataset_name: str) -> dict:
    """Builds the model, trains it with the chosen strategy, writes metrics.json, model.pt and a PNG.

    The output folder is checked first and created only when there is something to write. A run
    stopped by a signal or by a non-finite loss writes its best finished epoch (if any) and records
    ``epochs`` finished and ``stop_reason``; :func:`main` turns those into the exit status.
    """
    from tlkit import distributed
    from tlkit.backbones import load_backbone
    from tlkit.checkpoint import save_model
    from tlkit.outputs import check_out, data_root, write_run

    start = time.perf_counter()
    out = Path(args.out)
    check_out(out, data_root(train, val))
    model = load_backbone(args.backbone, num_classes=len(train.classes), class_names=train.classes)
    text = getattr(model, "input_kind", "image") == "text"  # for text, image_size is the number of tokens
    image_size = (getattr(args, "max_length", None) if text else args.image_size) or model.input_size
    log = logging.getLogger("tlkit")
    log.info("%s: %d train / %d val %s, %d classes", dataset_name, len(train), len(val),
             "sentences" if text else "images", len(train.classes))
    with warnings.catch_warnings():  # a diverged run is reported as the error line instead
        warnings.filterwarnings("ignore", r"(Head t|T)raining stopped in epoch", RuntimeWarning)
        train_fn = _train_features if args.strategy == "features" else _train_finetune
        result = train_fn(model, train, val, args, image_size)
    history = result["history"]
    received = getattr(args, "received", None)
    stop_reason = f"interrupted ({received.name})" if received and received.signum else \
        getattr(history, "stop_reason", None)
    ctx = distributed.context()  # under torchrun every rank trains; rank 0 alone writes
    metrics = {
        "dataset": dataset_name, "backbone": args.backbone, "strategy": args.strategy,
        "image_size": image_size, **({"max_length": image_size} if text else {}),
        "epochs": len(history), "epochs_requested": args.epochs,
        "stop_reason": stop_reason, "lr": args.lr, "seed": args.seed,
        "num_train": result["num_train"], "num_train_skipped": len(train) - result["num_train"],
        "num_val": result["num_val"], "num_val_skipped": len(val) - result["num_val"], "classes": train.classes,
        "val_accuracy": result["val_accuracy"], "confusion_matrix": result["confusion"],
        "seconds": round(time.perf_counter() - start, 2), **result["timings"],
        "world_size": ctx.world_size, "history": history.rows,
    }
    if ctx.is_main and len(history):  # an interrupted or diverged run without a finished epoch writes nothing
        write_run(out, metrics, lambda path: save_model(model, path, image_size=image_size, dataset=dataset_name,
                                                     bn_statistics="imagenet"),  # BN kept (eval_all): tlkit.adapt
                  lambda path: _save_confusion(result["confusion"], train.classes, path))
    return metrics


def _train_features(model, train, val, args, image_size: int) -> dict:
    from tlkit.checkpoint import load_head
    from tlkit.data import transforms_for
    from tlkit.evaluate import confusion_matrix, predictions_from_features
    from tlkit.features import extract_features, train_head
    from tlkit.freezing import freeze

    freeze(model, model.group_names[:-1])
    tf = transforms_for(model, train=False, image_size=image_size)  # no augmentation: features are cached
    t0 = time.perf_counter()
    ftr = extract_features(model, train.with_transform(tf), progress=not args.quiet)
    fva = extract_features(model, val.with_transform(tf), progress=not args.quiet)
    t1 = time.perf_counter()
    head, history = train_head(ftr, fva, epochs=args.epochs, lr=args.lr, seed=args.seed)
    t2 = time.perf_counter()
    load_head(model, head)
    preds = predictions_from_features(model, fva)
    cm = confusion_matrix(preds.labels, preds.preds, len(train.classes))
    return {"val_accuracy": round(preds.accuracy, 4), "confusion": cm.tolist(), "history": history,
            "num_train": len(ftr), "num_val": len(fva),
            "timings": {"features_seconds": round(t1 - t0, 2), "head_seconds": round(t2 - t1, 3),
                        "features_cached": ftr.from_cache and fva.from_cache, "engine": fva.engine,
                        "features_precision": fva.precision,
                        # where the feature pass's time went: decoding (a thread, during the forward pass),
                        # waiting for decoded images, and the forward pass
                        "decode_seconds": round(ftr.decode_seconds + fva.decode_seconds, 2),
                        "wait_seconds": round(ftr.load_seconds + fva.load_seconds, 2),
                        "forward_seconds": round(ftr.forward_seconds + fva.forward_seconds, 2)}}


def _train_finetune(model, train, val, args, image_size: int) -> dict:
    from tlkit.data import transforms_for
    from tlkit.evaluate import confusion_matrix, predict
    from tlkit.strategy import train_strategy

    t0 = time.perf_counter()
    text = getattr(model, "input_kind", "image") == "text"
    history = train_strategy(model, args.strategy, train, val, epochs=args.epochs, lr=args.lr,
                             head_lr=TEXT_HEAD_LR if text else None, unfreeze_at=args.unfreeze_at,
                             image_size=image_size, batch_size=args.batch_size,
                             seed=args.seed, progress=not args.quiet)
    t1 = time.perf_counter()
    preds = predict(model, val.with_transform(transforms_for(model, image_size=image_size)),
                    progress=not args.quiet)
    cm = confusion_matrix(preds.labels, preds.preds, len(train.classes))
    used = history.rows[-1].get("train_images", len(train)) if len(history) else 0
    return {"val_accuracy": round(preds.accuracy, 4), "confusion": cm.tolist(), "history": history,
            "num_train": used, "num_val": len(preds.labels),
            "timings": {"train_seconds": round(t1 - t0, 2)}}


def _save_confusion(cm: list, classes: list[str], path: Path) -> None:
    import torch

    from tlkit.outputs import write_atomic
    from tlkit.viz import figure_to_png, plot_confusion_matrix

    write_atomic(path, figure_to_png(plot_confusion_matrix(torch.tensor(cm), classes), dpi=100))
