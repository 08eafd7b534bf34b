"""Command line: ``python -m tlkit demo | train | evaluate | export`` (the training itself: :mod:`tlkit.cli_train`).

    python -m tlkit demo                               # dogs vs cats, feature extraction
    python -m tlkit train DATA_DIR --out runs/mine     # any train/ + val/ class-folder dataset
    python -m tlkit train DATA_DIR --strategy finetune --epochs 2 --image-size 160  # -> runs/finetune
    python -m tlkit evaluate runs/mine/model.pt DATA_DIR/val --json
    python -m tlkit export runs/mine/model.pt --format onnx --int8   # -> model.onnx, model.int8.onnx
    python -m tlkit evaluate runs/mine/model.int8.onnx DATA_DIR/val  # ONNX Runtime, same output
    python -m tlkit evaluate runs/mine/model.pt DATA_DIR/val --shift dark:4 --adapt-bn  # AdaBN before/after
    python -m tlkit train rt-polaritydata --backbone minilm         # text: sentences, frozen MiniLM features
    python -m tlkit train rt-polaritydata --backbone minilm --strategy finetune   # 1 epoch, 4e-5 / 1e-3 head
    python -m tlkit evaluate runs/finetune/model.pt dev.tsv           # columns: sentence (or text), label

Every failure the user can cause or fix (a bad argument or environment variable, a
missing folder, a wrong layout, a bad model file, a full disk, an unwritable folder,
running out of memory, a training run that diverged) prints one ``error:`` line and
exits with status 2, without a traceback; ``--debug`` (or ``TLKIT_DEBUG=1``) shows
the traceback too. A bug in tlkit always shows its traceback. Arguments are
checked before any folder is created. Ctrl-C (SIGINT) and SIGTERM keep the best
finished epoch: model.pt and metrics.json (with ``epochs`` finished and
``stop_reason``) are written and the exit status is 130 or 143.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from tlkit.cliargs import Parser, image_size, learning_rate, positive_int



def build_parser() -> argparse.ArgumentParser:
    from tlkit.strategy import STRATEGIES

    p = Parser(
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

    t = sub.add_parser("train", help="train on any class-folder dataset (train/ + val/ or validation/), or text",
                       description="Train a classifier on DATA_DIR/train/<class>/ and DATA_DIR/val/<class>/ "
                                   "(images), or on a text dataset: train.tsv + val.tsv (columns sentence or "
                                   "text, and label), <class>/*.txt folders, or rt-polaritydata as shipped.")
    t.add_argument("data_dir", help="folder holding train/ and val/ (or validation/), or a text dataset")
    t.add_argument("--out", default=None,
                   help="output folder for model.pt, metrics.json and confusion_matrix.png "
                        "(default: runs/<strategy>)")
    t.add_argument("--strategy", choices=list(STRATEGIES), default="features",
                   help="features: frozen backbone on cached features (fast); partial: train the top groups; "
                        "finetune: train the whole network (default: features)")
    t.add_argument("--unfreeze-at", type=positive_int, default=None, metavar="K",
                   help="gradual unfreezing: start with the head only and unfreeze the whole body at epoch K")
    t.add_argument("--batch-size", type=positive_int, default=32, help="images per step for partial/finetune (default 32)")
    t.add_argument("--max-length", type=positive_int, default=None, metavar="TOKENS",
                   help="text: tokens kept per sentence, 4 to 512 (default 64)")
    _common(t, epochs=None, lr=None)

    e = sub.add_parser("evaluate", help="accuracy of a saved model on a folder of class folders (or a text table)",
                       description="Evaluate MODEL.pt on SPLIT_DIR/<class>/ images (same class names); a text "
                                   "model on a .tsv/.csv file with sentence (or text) and label columns.")
    e.add_argument("model", help="a model.pt written by `train` or `demo`, or a .onnx written by `export`")
    e.add_argument("split_dir", help="folder with one sub-folder per class; for a text model a .tsv/.csv file")
    e.add_argument("--json", action="store_true", help="print the result as JSON (includes 'accuracy')")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--debug", action="store_true", help="show the traceback of every error")
    from tlkit.cli_adapt import add_adapt_arguments  # --shift NAME:SEVERITY, --adapt-bn

    add_adapt_arguments(e)
    from tlkit.cli_export import add_export_parser  # argparse only; onnx loads when the command runs

    add_export_parser(sub)
    return p


def _common(p: argparse.ArgumentParser, epochs: int | None, lr: float | None) -> None:
    p.add_argument("--backbone", default=None,
                   help="see tlkit.list_backbones() (default efficientnet_lite0; minilm for text data; "
                        "hf:NAME for a Hugging Face BERT-family encoder)")
    p.add_argument("--epochs", type=positive_int, default=epochs,
                   help="head epochs for features (default 30); epochs for partial/finetune (default 2)")
    p.add_argument("--lr", type=learning_rate, default=lr, help="learning rate (default: 1e-3 features, 3e-4 fine-tuning)")
    p.add_argument("--image-size", type=image_size, default=None,
                   help="input size in pixels, 32 to 1024 (default: the backbone's, 224)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the traceback of every error")


def cmd_demo(args: argparse.Namespace) -> dict:
    from tlkit.backbones import is_text_backbone
    from tlkit.cli_train import run_training
    from tlkit.outputs import check_out

    args.strategy, args.unfreeze_at = "features", None
    args.backbone = args.backbone or "efficientnet_lite0"
    if is_text_backbone(args.backbone):
        raise ValueError(f"demo trains on dog and cat photos; --backbone {args.backbone} reads text. Use an image "
                         "backbone (see tlkit.list_backbones()), or `train DATA --backbone minilm` for text.")
    check_out(Path(args.out))
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
    from tlkit.backbones import is_text_backbone
    from tlkit.cli_train import TEXT_FINETUNE_LR, run_training
    from tlkit.data import image_folder
    from tlkit.outputs import check_out
    from tlkit.text.folders import is_text_folder, load_text_folder

    text = is_text_folder(args.data_dir)
    args.backbone = args.backbone or ("minilm" if text else "efficientnet_lite0")
    if text != is_text_backbone(args.backbone):
        raise ValueError(f"{args.data_dir} holds {'text' if text else 'images'} but --backbone {args.backbone} "
                         f"reads {'text' if not text else 'images'}. Use --backbone "
                         f"{'minilm (or hf:NAME)' if text else 'efficientnet_lite0 (see tlkit.list_backbones())'}.")
    if args.out is None:
        args.out = f"runs/{args.strategy}"
    if args.epochs is None:  # text fine-tuning: one epoch (a second added nothing on the movie reviews)
        args.epochs = 30 if args.strategy == "features" else (1 if text else 2)
    if args.lr is None:
        args.lr = 1e-3 if args.strategy == "features" else (TEXT_FINETUNE_LR if text else 3e-4)
    if args.unfreeze_at is not None and args.strategy == "features":
        raise ValueError("--unfreeze-at needs --strategy partial or finetune: with features the backbone never "
                         "trains, so there is nothing to unfreeze. Drop --unfreeze-at or change --strategy.")
    if args.unfreeze_at is not None and not 2 <= args.unfreeze_at <= args.epochs:
        raise ValueError(f"--unfreeze-at must be an epoch between 2 and --epochs={args.epochs}, "
                         f"got {args.unfreeze_at}.")
    check_out(Path(args.out))  # before the slow scan; again with the data folder in run_training
    train, val = load_text_folder(args.data_dir) if text else image_folder(args.data_dir)
    return run_training(args, train, val, Path(args.data_dir).name)


def cmd_evaluate(args: argparse.Namespace) -> dict:
    from tlkit.checkpoint import load_model
    from tlkit.cli_adapt import evaluate_adapted, wants_adaptation
    from tlkit.evaluate import evaluate_split

    if wants_adaptation(args):  # --shift, --adapt-bn: tlkit.cli_adapt
        return evaluate_adapted(args)
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
    if command == "evaluate" and "shift" in result:  # --shift or --adapt-bn
        from tlkit.cli_adapt import report_adapted

        report_adapted(result)
        return
    if command == "evaluate":
        print(f"accuracy {result['accuracy']:.4f} on {result['n']} images")
        for cls, acc in result.get("per_class", {}).items():
            print(f"  {cls:<12} {acc:.4f}")
        return
    unit = "sentences" if "max_length" in result else "images"
    print(f"{result['dataset']}: {result['num_train']} train / {result['num_val']} val {unit}, "
          f"backbone {result['backbone']}, strategy {result['strategy']}, "
          + (f"{result['max_length']} tokens" if "max_length" in result else f"{result['image_size']} px"))
    print(f"validation accuracy {result['val_accuracy']:.4f}")
    timing = ", ".join(f"{k} {v}" for k, v in result.items() if k.endswith("seconds"))
    print(f"time: {timing}" + (" (features from cache)" if result.get("features_cached") else ""))
    if result.get("engine") and result.get("features_precision"):  # feature extraction: what computed the features
        print(f"features computed by {result['engine']} in {result['features_precision']}"
              + (" (TLKIT_ENGINE=torch for PyTorch)" if result["engine"] != "torch" else ""))
    print(f"wrote {Path(result.get('out', ''))}")


def cmd_export(args: argparse.Namespace) -> dict:
    from tlkit.cli_export import cmd_export as export

    return export(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status: 0 ok, 2 an error the user can fix (or a run that diverged),
    130 after Ctrl-C (SIGINT), 143 after SIGTERM."""
    from tlkit import distributed
    from tlkit.env import check_environment
    from tlkit.errors import user_message
    from tlkit.guard import Received, diverged, stop_signals

    args = build_parser().parse_args(argv)
    commands = {"demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "export": cmd_export}
    args.received = received = Received()
    debug = args.debug or os.environ.get("TLKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
    try:
        check_environment()  # every TLKIT_* variable, even those this run would not read
        with stop_signals() as received, distributed.session() as ctx:  # torchrun: one process group
            args.received = received
            args.quiet = args.quiet or not ctx.is_main  # only rank 0 logs and draws progress bars
            logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
            result = commands[args.command](args)
    except KeyboardInterrupt:
        print(f"interrupted ({received.name or 'SIGINT'}) before an epoch finished; nothing was written",
              file=sys.stderr)
        return received.exit_status or 130
    except Exception as exc:  # noqa: BLE001 - the user's errors become one line, bugs keep their traceback
        message = user_message(exc)
        if message is None or debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    if not ctx.is_main:
        return 0
    if args.command not in ("evaluate", "export"):  # export reports the file it wrote
        result["out"] = args.out
    stop = result.get("stop_reason") if args.command != "evaluate" else None
    if diverged(stop):
        kept = (f"the best finite epoch's model and metrics are in {args.out}" if result["epochs"]
                else "nothing was written")
        print(f"error: training diverged in epoch {result['epochs'] + 1} ({stop}) with lr={args.lr:g}; {kept}. "
              f"Use a lower --lr, e.g. --lr {args.lr / 100:.0e}.", file=sys.stderr)
        return 2
    if received.signum:
        print(f"interrupted ({received.name}) after {result['epochs']} finished epoch(s); the best weights and "
              f"metrics are in {args.out}" if result["epochs"] else f"interrupted ({received.name}) before an "
              "epoch finished; nothing was written", file=sys.stderr)
        return received.exit_status
    _report(args.command, result, getattr(args, "json", False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
