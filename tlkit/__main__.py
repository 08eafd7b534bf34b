"""Command line: ``python -m tlkit demo | train | evaluate | export``.

    python -m tlkit demo                               # dogs vs cats, feature extraction
    python -m tlkit train DATA_DIR --out runs/mine     # any train/ + val/ class-folder dataset
    python -m tlkit train DATA_DIR --strategy finetune --epochs 2 --image-size 160  # -> runs/finetune
    python -m tlkit evaluate runs/mine/model.pt DATA_DIR/val --json
    python -m tlkit export runs/mine/model.pt --format onnx --int8   # -> model.onnx, model.int8.onnx
    python -m tlkit evaluate runs/mine/model.int8.onnx DATA_DIR/val  # ONNX Runtime, same output

User errors (a missing folder, a wrong layout, a bad model file) print one
paragraph and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

def build_parser() -> argparse.ArgumentParser:
    from tlkit.strategy import STRATEGIES

    p = argparse.ArgumentParser(
        prog="python -m tlkit",
        description="tlkit: transfer learning you can read, run and watch.",
        epilog="Data: set TLKIT_DATA_DIR to a folder holding cats_and_dogs_filtered/ to work offline. "
               "Feature caches live in TLKIT_CACHE_DIR (default ~/.cache/tlkit).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="train the dog-vs-cat classifier by feature extraction (the main job)",
                       description="Dog vs cat with a frozen efficientnet_lite0 and a new 2-class head, on "
                                   "cats_and_dogs_filtered (found via TLKIT_DATA_DIR or downloaded). Writes "
                                   "metrics.json, model.pt and confusion_matrix.png to --out.")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    _common(d, epochs=30, lr=1e-3)

    t = sub.add_parser("train", help="train on any class-folder dataset (train/ + val/ or validation/)",
                       description="Train a classifier on DATA_DIR/train/<class>/ and DATA_DIR/val/<class>/.")
    t.add_argument("data_dir", help="folder holding train/ and val/ (or validation/)")
    t.add_argument("--out", default=None,
                   help="output folder for model.pt, metrics.json and confusion_matrix.png "
                        "(default: runs/<strategy>)")
    t.add_argument("--strategy", choices=list(STRATEGIES), default="features",
                   help="features: frozen backbone on cached features (fast); partial: train the top groups; "
                        "finetune: train the whole network (default: features)")
    t.add_argument("--unfreeze-at", type=int, default=None, metavar="K",
                   help="gradual unfreezing: start with the head only and unfreeze the whole body at epoch K")
    t.add_argument("--batch-size", type=int, default=32, help="images per step for partial/finetune (default 32)")
    _common(t, epochs=None, lr=None)

    e = sub.add_parser("evaluate", help="accuracy of a saved model on a folder of class folders",
                       description="Evaluate MODEL.pt on SPLIT_DIR/<class>/ images (same class names).")
    e.add_argument("model", help="a model.pt written by `train` or `demo`, or a .onnx written by `export`")
    e.add_argument("split_dir", help="folder with one sub-folder per class")
    e.add_argument("--json", action="store_true", help="print the result as JSON (includes 'accuracy')")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    from tlkit.cli_export import add_export_parser  # argparse only; onnx loads when the command runs

    add_export_parser(sub)
    return p


def _common(p: argparse.ArgumentParser, epochs: int | None, lr: float | None) -> None:
    p.add_argument("--backbone", default="efficientnet_lite0", help="see tlkit.list_backbones()")
    p.add_argument("--epochs", type=int, default=epochs,
                   help="head epochs for features (default 30); epochs for partial/finetune (default 2)")
    p.add_argument("--lr", type=float, default=lr, help="learning rate (default: 1e-3 features, 3e-4 fine-tuning)")
    p.add_argument("--image-size", type=int, default=None, help="input size (default: the backbone's, 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_demo(args: argparse.Namespace) -> dict:
    args.strategy, args.unfreeze_at = "features", None
    train, val = _dataset_once()
    return run_training(args, train, val, "cats_and_dogs_filtered")


def _dataset_once():
    """``cats_vs_dogs()``; under torchrun rank 0 alone may download it, the others wait and read it."""
    from tlkit import distributed
    from tlkit.data import cats_vs_dogs
    from tlkit.errors import DownloadError

    ctx = distributed.context()
    if not ctx.enabled:
        return cats_vs_dogs()
    error = None
    if ctx.is_main:
        try:
            cats_vs_dogs()  # finds it, or downloads it once for every process
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others have been told
            error = exc
    if not ctx.broadcast_object(error is None):
        if error is not None:
            raise error
        raise DownloadError("The first process could not find or download the dataset; see its message.")
    return cats_vs_dogs(download=False)


def cmd_train(args: argparse.Namespace) -> dict:
    from tlkit.data import image_folder

    train, val = image_folder(args.data_dir)
    if args.out is None:
        args.out = f"runs/{args.strategy}"
    if args.epochs is None:
        args.epochs = 30 if args.strategy == "features" else 2
    if args.lr is None:
        args.lr = 1e-3 if args.strategy == "features" else 3e-4
    return run_training(args, train, val, Path(args.data_dir).name)


def run_training(args: argparse.Namespace, train, val, dataset_name: str) -> dict:
    """Builds the model, trains it with the chosen strategy, writes model.pt, metrics.json and a PNG."""
    from tlkit import distributed
    from tlkit.backbones import load_backbone
    from tlkit.checkpoint import save_model

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_backbone(args.backbone, num_classes=len(train.classes), class_names=train.classes)
    image_size = args.image_size or model.input_size
    log = logging.getLogger("tlkit")
    log.info("%s: %d train / %d val images, classes %s", dataset_name, len(train), len(val), train.classes)
    if args.strategy == "features":
        result = _train_features(model, train, val, args, image_size)
    else:
        result = _train_finetune(model, train, val, args, image_size)
    ctx = distributed.context()  # under torchrun every rank trains; rank 0 alone writes
    if ctx.is_main:
        save_model(model, out / "model.pt", image_size=image_size, dataset=dataset_name)
        _save_confusion(result["confusion"], train.classes, out / "confusion_matrix.png")
    metrics = {
        "dataset": dataset_name, "backbone": args.backbone, "strategy": args.strategy,
        "image_size": image_size, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
        "num_train": len(train), "num_val": len(val), "classes": train.classes,
        "val_accuracy": result["val_accuracy"], "confusion_matrix": result["confusion"],
        "seconds": round(time.perf_counter() - start, 2), **result["timings"],
        "world_size": ctx.world_size, "history": result["history"].rows,
    }
    if ctx.is_main:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
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
            "timings": {"features_seconds": round(t1 - t0, 2), "head_seconds": round(t2 - t1, 3),
                        "features_cached": ftr.from_cache and fva.from_cache}}


def _train_finetune(model, train, val, args, image_size: int) -> dict:
    from tlkit.data import transforms_for
    from tlkit.evaluate import confusion_matrix, predict
    from tlkit.strategy import train_strategy

    t0 = time.perf_counter()
    history = train_strategy(model, args.strategy, train, val, epochs=args.epochs, lr=args.lr,
                             unfreeze_at=args.unfreeze_at, image_size=image_size, batch_size=args.batch_size,
                             seed=args.seed, progress=not args.quiet)
    t1 = time.perf_counter()
    preds = predict(model, val.with_transform(transforms_for(model, image_size=image_size)),
                    progress=not args.quiet)
    cm = confusion_matrix(preds.labels, preds.preds, len(train.classes))
    return {"val_accuracy": round(preds.accuracy, 4), "confusion": cm.tolist(), "history": history,
            "timings": {"train_seconds": round(t1 - t0, 2)}}


def _save_confusion(cm: list, classes: list[str], path: Path) -> None:
    import torch

    from tlkit.viz import figure_to_png, plot_confusion_matrix

    path.write_bytes(figure_to_png(plot_confusion_matrix(torch.tensor(cm), classes), dpi=100))


def cmd_evaluate(args: argparse.Namespace) -> dict:
    from tlkit.checkpoint import load_model
    from tlkit.evaluate import evaluate_split

    if Path(args.model).suffix.lower() == ".onnx":  # an exported file: ONNX Runtime, its metadata's preprocessing
        from tlkit.cli_export import evaluate_onnx

        return evaluate_onnx(args)
    model = load_model(args.model)
    return evaluate_split(model, args.split_dir, progress=not args.quiet)


def _report(command: str, result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))
        return
    if command == "export":
        from tlkit.cli_export import report_export

        report_export(result)
        return
    if command == "evaluate":
        print(f"accuracy {result['accuracy']:.4f} on {result['n']} images")
        for cls, acc in result.get("per_class", {}).items():
            print(f"  {cls:<12} {acc:.4f}")
        return
    print(f"{result['dataset']}: {result['num_train']} train / {result['num_val']} val images, "
          f"backbone {result['backbone']}, strategy {result['strategy']}, {result['image_size']} px")
    print(f"validation accuracy {result['val_accuracy']:.4f}")
    timing = ", ".join(f"{k} {v}" for k, v in result.items() if k.endswith("seconds"))
    print(f"time: {timing}" + (" (features from cache)" if result.get("features_cached") else ""))
    print(f"wrote {Path(result.get('out', ''))}")


def cmd_export(args: argparse.Namespace) -> dict:
    from tlkit.cli_export import cmd_export as export

    return export(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    from tlkit import distributed
    from tlkit.errors import USER_ERRORS, user_message

    args = build_parser().parse_args(argv)
    commands = {"demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "export": cmd_export}
    try:
        with distributed.session() as ctx:  # torchrun: one process group for the whole command
            args.quiet = args.quiet or not ctx.is_main  # only rank 0 logs and draws progress bars
            logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
            result = commands[args.command](args)
    except USER_ERRORS as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if not ctx.is_main:
        return 0
    if args.command not in ("evaluate", "export"):  # export reports the file it wrote
        result["out"] = args.out
    _report(args.command, result, getattr(args, "json", False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
