"""``python -m tlkit evaluate MODEL.pt DIR --shift NAME:SEVERITY --adapt-bn``: shifted data and AdaBN.

    python -m tlkit evaluate runs/demo/model.pt val/ --shift blur:3             # accuracy under a shift
    python -m tlkit evaluate runs/demo/model.pt val/ --shift dark:4 --adapt-bn  # before and after AdaBN
    python -m tlkit evaluate runs/demo/model.pt val/ --adapt-bn --json          # + accuracy_before_adaptation

``--adapt-bn`` re-estimates the BatchNorm statistics on DIR's images, ignoring
their labels (:func:`tlkit.adapt.adapt_batchnorm`), and reports the accuracy
before and after. A head trained on features computed with the ImageNet
statistics (every model ``python -m tlkit train`` writes) expects those
statistics, so adapting can break it; the command warns and says what to do
instead. A checkpoint records the statistics its head's features used in
``extra["bn_statistics"]`` (:data:`tlkit.adapt.STATS_IMAGENET`, ``STATS_SOURCE``
or ``STATS_TRAINED``); a file without the record is taken as ImageNet.
"""
from __future__ import annotations

import argparse
import sys

from tlkit.adapt import STATS_IMAGENET, STATS_SOURCE, STATS_TRAINED

HEAD_WARNING = (
    "the head of {model} was trained on features computed with the ImageNet BatchNorm statistics; --adapt-bn "
    "replaces them, so the head sees other features and its accuracy may drop (compare the two numbers). "
    "AdaBN suits a model whose BatchNorm statistics match its training photos: in Python, adapt_batchnorm(model, "
    "train) first, then extract_features and train_head, and save it with save_model(..., bn_statistics='source'); "
    "or fine-tune with BatchNorm in training mode. Otherwise keep the ImageNet statistics (drop --adapt-bn).")


def shift_spec(text: str) -> str:
    """argparse type: a built-in shift ``NAME:SEVERITY`` (or several joined by ``+``), checked now."""
    from tlkit.shift_kinds import make_shift

    try:
        make_shift(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None
    return text


def add_adapt_arguments(p: argparse.ArgumentParser) -> None:
    """``--shift`` and ``--adapt-bn`` for the ``evaluate`` command."""
    from tlkit.shift_kinds import SHIFTS

    p.add_argument("--shift", type=shift_spec, default=None, metavar="NAME:SEVERITY",
                   help=f"apply a built-in shift to the images first: {', '.join(SHIFTS)}, severity 1-5 "
                        "(e.g. blur:3; join several with +)")
    p.add_argument("--adapt-bn", action="store_true",
                   help="re-estimate BatchNorm statistics on the images (labels ignored, AdaBN) and print "
                        "accuracy before and after")


def wants_adaptation(args: argparse.Namespace) -> bool:
    """True when ``evaluate`` was given ``--shift`` or ``--adapt-bn``."""
    return bool(getattr(args, "shift", None) or getattr(args, "adapt_bn", False))


def head_statistics(checkpoint: dict) -> str:
    """Which BatchNorm statistics the head's features were computed with, from a checkpoint's record."""
    stats = (checkpoint.get("extra") or {}).get("bn_statistics")
    return stats if stats in (STATS_IMAGENET, STATS_SOURCE, STATS_TRAINED) else STATS_IMAGENET


def evaluate_adapted(args: argparse.Namespace) -> dict:
    """``evaluate`` with ``--shift`` and/or ``--adapt-bn``: the usual result plus the adaptation's figures."""
    from tlkit.adapt import adapt_batchnorm, require_batchnorm
    from tlkit.checkpoint import load_model, read_checkpoint
    from tlkit.evaluate import predict, split_dataset, split_report
    from tlkit.shifts import shifted

    if str(args.model).lower().endswith(".onnx"):
        raise ValueError("--shift and --adapt-bn need the model.pt: an exported .onnx file has its BatchNorm "
                         "folded into the convolutions, so there are no statistics to adapt. Pass model.pt.")
    model = load_model(args.model)
    if args.shift and getattr(model, "input_kind", "image") != "image":
        raise ValueError(f"--shift applies image shifts; {args.model} is a {model.input_kind} model. "
                         "Drop --shift.")
    if args.adapt_bn:
        require_batchnorm(model)  # before any slow pass
    data = split_dataset(model, args.split_dir)
    if args.shift:
        data = shifted(data, args.shift)
    result = split_report(predict(model, data, progress=not args.quiet))
    result["shift"] = args.shift
    if not args.adapt_bn:
        return result
    stats = head_statistics(read_checkpoint(args.model))
    warning = HEAD_WARNING.format(model=args.model) if stats == STATS_IMAGENET else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    report = adapt_batchnorm(model, data, progress=not args.quiet)
    after = split_report(predict(model, data, progress=not args.quiet))
    return {**after, "accuracy_before_adaptation": result["accuracy"], "shift": args.shift,
            "adapted_images": report.images, "adapted_layers": report.layers,
            "adapt_seconds": round(report.seconds, 2), "head_bn_statistics": stats, "warning": warning}


def report_adapted(result: dict) -> None:
    """The text report of :func:`evaluate_adapted`."""
    on = f" on {result['n']} images" + (f" shifted by {result['shift']}" if result.get("shift") else "")
    if "accuracy_before_adaptation" in result:
        print(f"accuracy before adaptation {result['accuracy_before_adaptation']:.4f}{on}")
        print(f"accuracy after adapting BatchNorm ({result['adapted_layers']} layers, {result['adapted_images']} "
              f"images, {result['adapt_seconds']} s) {result['accuracy']:.4f}")
    else:
        print(f"accuracy {result['accuracy']:.4f}{on}")
    for cls, acc in result.get("per_class", {}).items():
        print(f"  {cls:<12} {acc:.4f}")
