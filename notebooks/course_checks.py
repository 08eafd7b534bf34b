"""Instant feedback for the course exercises.

Each ``check_...`` function takes your answer (and whatever it needs to judge
it), prints what is right ("Correct: ...") or what is wrong and how to fix it
("Not yet: ..."). None of them raises on a wrong or missing answer, so a
notebook always runs from top to bottom.

Example:
    >>> from course_checks import check_trainable_count
    >>> check_trainable_count(2562)
    Correct: 1280 x 2 weights + 2 biases = 2,562 trainable parameters.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

IMAGENET_DOGS = range(151, 269)  # ImageNet class indices 151..268: dog breeds
IMAGENET_CATS = range(281, 286)  # 281..285: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _ok(message: str) -> None:
    print(f"Correct: {message}")


def _not_yet(message: str) -> None:
    print(f"Not yet: {message}")


def _missing(answer, what: str) -> bool:
    """True (after saying so) when the learner has not answered yet."""
    if answer is None or answer is ...:
        _not_yet(f"replace the None with {what}, then run the cell again.")
        return True
    return False


def _number(answer) -> float | None:
    try:
        return float(answer)
    except (TypeError, ValueError):
        return None


def _number_answer(answer, what: str, positive: bool = False) -> float | None:
    """The answer as a number; None (after saying what is wanted) when it is missing or not a number."""
    if _missing(answer, what):
        return None
    n = _number(answer)
    if n is None or (positive and n <= 0):
        _not_yet(f"expected {'a positive number' if positive else 'a number'} ({what}), got {answer!r}.")
        return None
    return n


# --------------------------------------------------------------------------
# Claim checks: the prose's results, checked when the notebooks are rebuilt

class ClaimError(AssertionError):
    """A sentence of the course that the numbers of this run contradict."""


def claims_enforced() -> bool:
    """True inside ``make notebooks`` (``TLKIT_CLAIMS=1``, set by tools/make_notebooks.py), not in test mode."""
    return os.environ.get("TLKIT_CLAIMS") == "1" and os.environ.get("TLKIT_FAST") != "1"


def ran_before(notebook: str) -> bool:
    """True when this build already ran ``notebook`` (e.g. "02") with the same feature cache.

    tools/make_notebooks.py lists them in ``TLKIT_BUILD_RAN``; a learner who runs
    a notebook alone has no such list, so claims about the cache are not judged.
    """
    return notebook in os.environ.get("TLKIT_BUILD_RAN", "").split()


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def claim(condition, sentence: str, **numbers) -> None:
    """Guards a sentence of the notebook's text with the numbers of this run.

    In test mode (``TLKIT_FAST=1``) it does nothing: those numbers mean
    nothing. Inside ``make notebooks`` a false claim raises :class:`ClaimError`
    naming the sentence and the numbers, so the build fails instead of
    committing text that its outputs contradict. Anywhere else (a learner's
    run, on other hardware) it prints a note and the notebook goes on.
    It returns None, so a claim cell shows no output when the claim holds.

    Example:
        >>> claim(0.97 > 0.9, "the head reaches over 90%", val_acc=0.97)  # holds: silent
    """
    if os.environ.get("TLKIT_FAST") == "1" or bool(condition):
        return
    shown = ", ".join(f"{k}={_show(v)}" for k, v in numbers.items()) or "no numbers given"
    message = f"the text says {sentence!r}, but this run has {shown}."
    if claims_enforced():
        raise ClaimError(f"Claim failed: {message} Change the sentence or the experiment.")
    print(f"Note: on this machine {message} (The text describes the course's reference run.)")


# --------------------------------------------------------------------------
# 01: what transfer learning is

def check_trainable_count(answer) -> None:
    """01: trainable parameters of efficientnet_lite0 with a frozen body and a new 2-class head."""
    n = _number_answer(answer, "a number of parameters")
    if n is None:
        return
    if n == 2562:
        return _ok("1280 x 2 weights + 2 biases = 2,562 trainable parameters.")
    if n == 1_281_000:
        return _not_yet("that is the 1000-class ImageNet head. Replace it with a 2-class head first "
                        "(model.replace_head(2)).")
    if n == 2560:
        return _not_yet("close: you counted the weights but not the 2 biases.")
    if n > 100_000:
        return _not_yet(f"{int(n):,} is far too many: freeze every group except 'head' before counting "
                        "(freeze(model, model.group_names[:-1])).")
    return _not_yet(f"{n:g} is not it. The head maps {1280} features to 2 classes: count its weights and biases.")


def trainable_after(trainable_groups: Sequence[str], num_classes: int = 2,
                    backbone: str = "efficientnet_lite0") -> int:
    """Reference: trainable parameters of ``backbone`` with a new head when only ``trainable_groups`` train."""
    from tlkit import count_parameters, freeze, load_backbone

    model = load_backbone(backbone, pretrained=False, num_classes=num_classes)
    freeze(model, [g for g in model.group_names if g not in trainable_groups])
    return count_parameters(model)[0]


def check_trainable_after(answer, trainable_groups: Sequence[str], num_classes: int = 2,
                          backbone: str = "efficientnet_lite0") -> None:
    """01: trainable parameters when only ``trainable_groups`` (and a ``num_classes`` head) train."""
    n = _number_answer(answer, "a number of parameters")
    if n is None:
        return
    ref = trainable_after(trainable_groups, num_classes, backbone)
    body = trainable_after([g for g in trainable_groups if g != "head"], num_classes, backbone)
    if n == ref:
        return _ok(f"{', '.join(trainable_groups)}: {ref:,} trainable parameters ({ref - body:,} of them in the "
                   f"{num_classes}-class head).")
    if n == body:
        return _not_yet("you left out the new head's weights and biases.")
    if n == ref - body:
        return _not_yet("that is the head alone; the unfrozen groups train too.")
    if n > ref:
        return _not_yet(f"{int(n):,} is too many: freeze every group that is not in {list(trainable_groups)} first.")
    return _not_yet(f"{n:g} is too few. Count every parameter of {list(trainable_groups)}, with the head for "
                    f"{num_classes} classes (model.replace_head({num_classes})).")


def zero_shot_accuracy(probs, labels) -> float:
    """Reference for check_zero_shot: dog if P(dog breeds) > P(cat breeds)."""
    import torch

    p_dog = probs[:, list(IMAGENET_DOGS)].sum(1)
    p_cat = probs[:, list(IMAGENET_CATS)].sum(1)
    return float(((p_dog > p_cat).long() == torch.as_tensor(labels)).float().mean())


def check_zero_shot(answer, probs, labels) -> None:
    """01: accuracy of the untrained ImageNet head used as a dog-vs-cat classifier."""
    n = _number_answer(answer, "the accuracy (a number between 0 and 1)")
    if n is None:
        return
    if n > 1:
        return _not_yet("give the accuracy as a fraction between 0 and 1, not a percentage.")
    ref = zero_shot_accuracy(probs, labels)
    if math.isclose(n, ref, abs_tol=1e-6):
        return _ok(f"{ref:.1%} of the photos are sorted correctly, and nothing was trained. "
                   "ImageNet's source task already contains the target task.")
    if math.isclose(n, 1 - ref, abs_tol=1e-6):
        return _not_yet("you have the labels the wrong way round: class 0 is 'cats', class 1 is 'dogs'.")
    return _not_yet(f"{n:.3f} does not match. Sum the probabilities of classes 151-268 (dogs) and "
                    "281-285 (cats) per photo, predict dog where the dog sum is larger, compare with labels.")


def last_feature_size(image_size: int, backbone: str = "efficientnet_lite0") -> int:
    """Reference: height (= width) of the last body group's output for a square input, measured."""
    import torch

    from tlkit import load_backbone

    model = load_backbone(backbone, pretrained=False).eval()
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        for name, group in model.groups.items():
            if name == "head":
                break
            x = group(x)
    return int(x.shape[-1])


def check_spatial_size(answer, image_size: int = 224) -> None:
    """01: height (= width) of the last feature map of efficientnet_lite0 for a square input."""
    if _missing(answer, "a number of pixels"):
        return
    n, ref = _number(answer), last_feature_size(image_size)
    if n == ref:
        return _ok(f"{image_size} px / {image_size / ref:g} = {ref}: the network's total stride is 32, so each "
                   "late feature sees a large part of the photo, and no longer where exactly an edge is.")
    if n == image_size:
        return _not_yet("that is the input size. How often does the network halve it?")
    return _not_yet(f"{answer} is not it. In the figure, by how much has the 224 px input shrunk by stage8? "
                    f"The same factor applies to {image_size} px.")


# --------------------------------------------------------------------------
# 02: the dog-vs-cat classifier

def check_recipe(model) -> None:
    """02: another backbone with a new 2-class head and a frozen body."""
    if _missing(model, "the model you built"):
        return
    if not hasattr(model, "group_names"):
        return _not_yet(f"expected a tlkit Backbone from load_backbone(...), got {type(model).__name__}.")
    if model.name == "efficientnet_lite0":
        return _not_yet("use another backbone, e.g. load_backbone('resnet18', pretrained=False).")
    if model.num_classes != 2:
        return _not_yet(f"the head has {model.num_classes} outputs; replace it with 2 (model.replace_head(2)).")
    trainable = [g for g in model.group_names if any(p.requires_grad for p in model.groups[g].parameters())]
    if trainable != ["head"]:
        return _not_yet(f"these groups would train: {trainable}. Freeze all but the head: "
                        "freeze(model, model.group_names[:-1]).")
    n = sum(p.numel() for p in model.head.parameters())
    return _ok(f"{model.name}: {model.num_features} features -> 2 classes, {n:,} trainable parameters; "
               "the rest is frozen.")


def _normalize_of(transform):
    """The torchvision Normalize inside ``transform`` (a Compose), or None."""
    from torchvision import transforms as T

    steps = getattr(transform, "transforms", [transform])
    return next((t for t in steps if isinstance(t, T.Normalize)), None)


def check_fixed_recipe(model, transform) -> None:
    """02: the broken recipe fixed: a 2-class head that trains, a frozen body, the model's own preprocessing."""
    if _missing(model, "the fixed model") or _missing(transform, "the fixed preprocessing"):
        return
    if not hasattr(model, "group_names"):
        return _not_yet(f"expected a tlkit Backbone, got {type(model).__name__}.")
    trainable = [g for g in model.group_names if any(p.requires_grad for p in model.groups[g].parameters())]
    if model.num_classes != 2:
        return _not_yet(f"the head has {model.num_classes} outputs; cats vs dogs needs 2.")
    if trainable != ["head"]:
        return _not_yet(f"these groups would train: {trainable or 'none at all'}. Run trainable_summary(model) "
                        "after each line of the recipe: which line leaves the wrong groups trainable?")
    norm = _normalize_of(transform)
    if norm is None:
        return _not_yet("the preprocessing has no Normalize step: the pixels would reach the network unscaled.")
    if not all(math.isclose(float(a), float(b), abs_tol=1e-3) for a, b in
               zip(list(norm.mean) + list(norm.std), list(model.mean) + list(model.std))):
        return _not_yet(f"the preprocessing normalises with mean {tuple(round(float(v), 3) for v in norm.mean)}, "
                        "which is not what this backbone was trained with. Whose statistics are those?")
    return _ok(f"{model.name}: only the 2-class head trains, and the preprocessing is built from this model "
               "(transforms_for(other)), not from the Lite0 of the cells above.")


def check_cache_megabytes(answer, n_photos: int = 2000, num_features: int = 1280) -> None:
    """02: size in MB (10^6 bytes) of ``n_photos`` cached feature vectors stored as float32."""
    n = _number_answer(answer, "a number of megabytes")
    if n is None:
        return
    ref = n_photos * num_features * 4 / 1e6
    if math.isclose(n, ref, rel_tol=0.02):
        return _ok(f"{n_photos:,} x {num_features} numbers x 4 bytes = {ref:.2f} MB: the photos themselves take "
                   "tens of MB as JPEG, and hundreds of MB once decoded. Caching the features is cheap.")
    if math.isclose(n, ref / 4, rel_tol=0.02):
        return _not_yet("that is the number of values, in millions. How many bytes does one float32 take?")
    if math.isclose(n, ref / 2, rel_tol=0.02):
        return _not_yet("that is 2 bytes per value (16-bit). The question asks for float32.")
    if math.isclose(n, ref * 1e6, rel_tol=0.02) or math.isclose(n, ref * 1e3, rel_tol=0.02):
        return _not_yet("right digits, wrong unit: give megabytes (1 MB = 1,000,000 bytes).")
    return _not_yet(f"{n:g} MB is not it. One feature vector per photo: how many numbers, and how many bytes each?")


def check_normalisation(mean, std, model) -> None:
    """02: the mean and std the backbone's weights expect (read from the model, not guessed)."""
    if _missing(mean, "the mean (three numbers)") or _missing(std, "the std (three numbers)"):
        return
    try:
        mean, std = [float(v) for v in mean], [float(v) for v in std]
    except (TypeError, ValueError):
        return _not_yet("give mean and std as three numbers each, e.g. (0.5, 0.5, 0.5).")
    if len(mean) != 3 or len(std) != 3:
        return _not_yet("one value per colour channel: three numbers each.")
    want_m, want_s = list(model.mean), list(model.std)
    close = all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(mean + std, want_m + want_s))
    if close:
        return _ok(f"mean {tuple(round(v, 3) for v in want_m)}, std {tuple(round(v, 3) for v in want_s)}: "
                   "transforms_for(model) reads them from the backbone, so you never hard-code them.")
    if math.isclose(mean[0], 0.485, abs_tol=1e-3):
        return _not_yet("those are the usual ImageNet statistics, but this backbone was trained with other "
                        "ones. Read model.mean and model.std.")
    return _not_yet(f"expected mean {tuple(round(v, 3) for v in want_m)} and std {tuple(round(v, 3) for v in want_s)}.")


def lr_reference(train_feats, val_feats, lrs: Sequence[float], epochs: int) -> dict:
    """Reference for check_lr_results: best validation accuracy of a head per learning rate (seed 0)."""
    from tlkit.features import train_head

    return {lr: train_head(train_feats, val_feats, epochs=epochs, lr=lr, seed=0)[1].best("val_acc")["val_acc"]
            for lr in lrs}


def check_lr_results(lr_results: dict, train_feats, val_feats, lrs: Sequence[float] = (1e-4, 1e-3, 1e-1),
                     epochs: int = 10) -> None:
    """02: best validation accuracy per head learning rate; the reference runs are trained here."""
    if _missing(lr_results, "a dict {learning_rate: best validation accuracy}"):
        return
    reference = lr_reference(train_feats, val_feats, lrs, epochs)
    if not isinstance(lr_results, dict) or not lr_results:
        return _not_yet("expected a dict such as {1e-4: 0.93, 1e-3: 0.97, 1e-1: 0.95}.")
    missing = [lr for lr in reference if lr not in lr_results]
    if missing:
        return _not_yet(f"train a head for each of {sorted(reference)}; missing: {missing}.")
    wrong = [lr for lr in reference if not math.isclose(float(lr_results[lr]), reference[lr], abs_tol=0.02)]
    if wrong:
        return _not_yet(f"the value for lr={wrong[0]:g} is {lr_results[wrong[0]]:.3f}, expected about "
                        f"{reference[wrong[0]]:.3f}. Train with seed=0 and epochs={epochs}, and record "
                        "the best validation accuracy of each run, not the last.")
    best = max(reference, key=reference.get)
    return _ok(f"lr={best:g} is best here ({reference[best]:.1%}). Too low learns slowly; too high overshoots.")


# --------------------------------------------------------------------------
# 03: feature extraction vs fine-tuning

def check_partial(model) -> None:
    """03: only stage7, stage8 and the head trainable (efficientnet_lite0)."""
    if _missing(model, "the model"):
        return
    trainable = [g for g in model.group_names if any(p.requires_grad for p in model.groups[g].parameters())]
    want = model.group_names[-3:]
    if trainable == want:
        n = sum(p.numel() for g in want for p in model.groups[g].parameters())
        return _ok(f"{', '.join(want)} train ({n:,} parameters); every earlier group keeps its ImageNet weights.")
    if trainable == model.group_names:
        return _not_yet("everything trains. freeze_to(model, -3) freezes all but the last three groups.")
    return _not_yet(f"trainable now: {trainable}; wanted {want}. Try freeze_to(model, -3).")


def check_layerwise(groups: Sequence[dict]) -> None:
    """03: optimizer parameter groups with rates rising from the stem (1e-5) to the head (1e-3)."""
    if _missing(groups, "the list returned by param_groups(...)"):
        return
    try:
        rates: dict[str, float] = {}
        for g in groups:
            rates.setdefault(g["name"].removesuffix(".no_decay"), g["lr"])
    except (TypeError, KeyError):
        return _not_yet("pass the list of dicts that param_groups(model, (1e-5, 1e-3)) returns.")
    values = list(rates.values())
    if not values:
        return _not_yet("the list is empty: is every group frozen? Call freeze_to(model, 0) first.")
    if not math.isclose(values[0], 1e-5, rel_tol=1e-6) or not math.isclose(values[-1], 1e-3, rel_tol=1e-6):
        return _not_yet(f"first rate {values[0]:.1e}, last {values[-1]:.1e}; wanted 1e-05 for "
                        f"{list(rates)[0]} and 1e-03 for {list(rates)[-1]}: lr=(1e-5, 1e-3).")
    if any(b < a for a, b in zip(values, values[1:])):
        return _not_yet("the rates should rise from input to output.")
    if len(values) < 3:
        return _not_yet(f"only {list(rates)} train. Unfreeze the whole network first (freeze_to(model, 0)).")
    return _ok(f"{len(values)} groups from {values[0]:.0e} ({list(rates)[0]}) to {values[-1]:.0e} "
               f"({list(rates)[-1]}): generic early layers move least.")


def layer_rate(group: str, lr: tuple[float, float], backbone: str = "efficientnet_lite0") -> float:
    """Reference: the learning rate ``param_groups`` gives ``group`` with every group trainable."""
    from tlkit import load_backbone
    from tlkit.freezing import param_groups

    model = load_backbone(backbone, pretrained=False, num_classes=2)
    rates = {g["name"].removesuffix(".no_decay"): g["lr"] for g in param_groups(model, lr)}
    return rates[group]


def check_layer_rate(answer, group: str = "stage7", lr: tuple[float, float] = (1e-5, 1e-3)) -> None:
    """03: predict the rate of one group when ``lr=(low, high)`` is spread over all groups."""
    n = _number_answer(answer, "a learning rate", positive=True)
    if n is None:
        return
    ref = layer_rate(group, lr)
    if math.isclose(n, ref, rel_tol=0.02):
        return _ok(f"{group} gets {ref:.2e}: the rates are spread log-evenly, so each group's rate is the "
                   "previous one times the same factor.")
    low, high = lr
    if ref < n < high:
        return _not_yet(f"{n:.2e} is too high. Did you spread the rates linearly? They are spread log-evenly "
                        "(the same factor from each group to the next).")
    return _not_yet(f"{n:.2e} is not it. Count the groups from stem to head, find the factor between neighbours "
                    f"({high:g}/{low:g} spread over the gaps), and step up to {group}.")


def bn_in_train_mode(k: int, backbone: str = "efficientnet_lite0") -> int:
    """Reference: BatchNorm layers in train mode after ``freeze_to(model, k)`` and ``model.train()``."""
    from torch import nn

    from tlkit import freeze_to, load_backbone

    model = load_backbone(backbone, pretrained=False, num_classes=2)
    freeze_to(model, k)
    model.train()
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def check_bn_train_count(answer, k: int = -3) -> None:
    """03: predict how many BatchNorm layers update their statistics after freeze_to(model, k) and model.train()."""
    n = _number_answer(answer, "a number of BatchNorm layers")
    if n is None:
        return
    ref = bn_in_train_mode(k)
    if n == ref:
        return _ok(f"{ref}: only the BatchNorm layers of the trainable groups follow model.train(); the frozen "
                   "groups' BatchNorm stays in eval mode and keeps its ImageNet statistics.")
    if n > ref:
        return _not_yet(f"{n:g} is too many: does a frozen group's BatchNorm switch to train mode under the "
                        "default policy? Check with trainable_summary(model).")
    return _not_yet(f"{n:g} is too few: count the BatchNorm layers of every group that still trains.")


FINETUNE_BUG = "B"  # 03's broken recipe: line B freezes everything but the head


def check_finetune_bug(answer) -> None:
    """03: which line of the broken layer-wise fine-tuning recipe is wrong."""
    if _missing(answer, "a line letter, 'A' to 'D'"):
        return
    letter = str(answer).strip().upper()
    if letter not in "ABCD" or len(letter) != 1:
        return _not_yet("answer with one letter, 'A' to 'D'.")
    if letter == FINETUNE_BUG:
        return _ok("freeze_to(model, -1) leaves only the head trainable, so the 'layer-wise' rates reach one "
                   "group and the body never moves. For fine-tuning everything: freeze_to(model, 0).")
    return _not_yet(f"line {letter} does what it says. Run the recipe and call trainable_summary(model) "
                    "before fit: is the body trainable?")


def check_bn_mode(answer) -> None:
    """03: what BatchNorm in a frozen group does under model.train() with the default policy."""
    if _missing(answer, "'eval' or 'train'"):
        return
    if str(answer).strip().lower() == "eval":
        return _ok("frozen groups keep their BatchNorm in eval mode: their ImageNet running statistics "
                   "stay as they were, whatever the batch size.")
    return _not_yet("run model.train() and then trainable_summary(model): look at the BN column of a frozen group.")


# --------------------------------------------------------------------------
# 04: overfitting and when transfer hurts

def check_val_loss(history, baseline_loss: float) -> None:
    """04: a run whose final validation loss is below the overfitting baseline's."""
    if _missing(history, "the History that fit(...) returned"):
        return
    try:
        last = history.last()
        loss = last["val_loss"]
    except (AttributeError, KeyError, TypeError):
        return _not_yet("pass the History that fit(...) returned, trained with validation data.")
    if loss is None or not math.isfinite(loss):
        return _not_yet(f"the final validation loss is {loss}; was the learning rate too high?")
    if loss < baseline_loss:
        return _ok(f"final validation loss {loss:.3f} against the baseline's {baseline_loss:.3f} "
                   f"(validation accuracy {last['val_acc']:.1%}).")
    return _not_yet(f"final validation loss {loss:.3f} is not below the baseline's {baseline_loss:.3f}. Add dropout, "
                    "weight decay, a schedule, or train fewer epochs.")


def wilson(acc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval (low, high) of an accuracy measured on ``n`` photos."""
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def check_beats_baseline(history, baseline_acc: float, n_val: int) -> None:
    """04: a fine-tuning run whose final accuracy's interval lies above the baseline's."""
    if _missing(history, "the History that finetune(...) returned"):
        return
    try:
        acc = float(history.last()["val_acc"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return _not_yet("pass the History that finetune(...) returned (it is trained with validation data).")
    low, high = wilson(acc, n_val)
    base_high = wilson(baseline_acc, n_val)[1]
    if low > base_high:
        return _ok(f"{acc:.1%} (interval {low:.1%} to {high:.1%}) against the baseline's {baseline_acc:.1%} "
                   f"(up to {base_high:.1%}): better beyond the noise of {n_val} photos.")
    if acc > baseline_acc:
        return _not_yet(f"{acc:.1%} is above the baseline's {baseline_acc:.1%}, but its interval starts at "
                        f"{low:.1%}, inside the baseline's (up to {base_high:.1%}): a tie. Look for a bigger effect.")
    return _not_yet(f"{acc:.1%} is not above the baseline's {baseline_acc:.1%}. Which setting decides how far the "
                    "pretrained weights move?")


def check_val_size(answer, accuracy: float = 0.9, half_width: float = 0.01) -> None:
    """04: validation photos needed for a 95% interval of +-half_width around ``accuracy``."""
    n = _number_answer(answer, "a number of photos", positive=True)
    if n is None:
        return
    ref = math.ceil(1.96 ** 2 * accuracy * (1 - accuracy) / half_width ** 2)
    if abs(n - ref) <= 0.02 * ref:
        return _ok(f"about {ref:,} photos: halving the interval takes four times the photos. That is why "
                   "500 photos cannot separate remedies a point or two apart.")
    if abs(n - ref / 1.96 ** 2) <= 0.02 * ref / 1.96 ** 2:
        return _not_yet("you left out z = 1.96, the factor for 95% confidence.")
    if abs(n - math.sqrt(ref)) <= 0.05 * math.sqrt(ref):
        return _not_yet("the half-width shrinks with the square root of n: square before you solve.")
    return _not_yet(f"{n:g} is not it. Set 1.96 * sqrt(p * (1 - p) / n) = {half_width} with p = {accuracy} "
                    "and solve for n.")


def check_better_layer(answer, results: dict) -> None:
    """04: which feature depth works better on the line-orientation task."""
    if _missing(answer, "'stage3' or 'stage8'"):
        return
    if answer not in results:
        return _not_yet(f"choose one of {list(results)}.")
    best = max(results, key=results.get)
    if answer == best:
        return _ok(f"{best} features reach {results[best]:.1%} against {min(results.values()):.1%}. "
                   "What the task needs was still there in the earlier layers and was pooled away later.")
    return _not_yet("look at the table again: which depth gives the higher validation accuracy?")


def check_choice(answer, table: Sequence[dict], max_params_m: float = 6.0, min_top1: float = 0.0) -> None:
    """04: the fastest backbone with at most ``max_params_m`` million parameters and ``min_top1``% top-1."""
    if _missing(answer, "a backbone name"):
        return
    names = [r["backbone"] for r in table]
    if answer not in names:
        return _not_yet(f"choose one of {names}.")
    small = [r for r in table if r["params_M"] <= max_params_m and (r.get("top1") or 0) >= min_top1]
    best = max(small, key=lambda r: r["img_per_s"])
    row = next(r for r in table if r["backbone"] == answer)
    if row["params_M"] > max_params_m:
        return _not_yet(f"{answer} has {row['params_M']:.1f} M parameters, over the {max_params_m:g} M budget.")
    if (row.get("top1") or 0) < min_top1:
        return _not_yet(f"{answer} reaches {row.get('top1')}% ImageNet top-1, under the {min_top1:g}% needed.")
    if answer == best["backbone"]:
        return _ok(f"{answer}: {row['params_M']:.1f} M parameters, {row['img_per_s']:.0f} images/s on this CPU. "
                   "Check its licence and accuracy on your data before shipping it.")
    return _not_yet(f"{answer} fits the budget, but {best['backbone']} is faster on this machine.")


# --------------------------------------------------------------------------
# 05: live lab

def check_too_high(answer, verdicts: dict) -> None:
    """05: the smallest learning rate the LRExplorer called 'too high'."""
    if _missing(answer, "a learning rate"):
        return
    high = sorted(lr for lr, (verdict, _) in verdicts.items() if verdict == "too high")
    if not high:
        return _not_yet("no rate was too high in this run; add a larger one (e.g. 1.0) and compare again.")
    n = _number(answer)
    if n is not None and math.isclose(n, high[0], rel_tol=1e-6):
        return _ok(f"from lr={high[0]:g} up, the head's updates overshoot: {verdicts[high[0]][1]}.")
    return _not_yet(f"the rates judged too high were {high}; give the smallest of them.")


def check_unfreeze_budget(answer, min_params: int = 1_000_000, num_classes: int = 2,
                          backbone: str = "efficientnet_lite0") -> None:
    """05: the fewest top groups (plus the head) to unfreeze so that at least ``min_params`` train."""
    if _missing(answer, "a list of group names, e.g. ['stage8', 'head']"):
        return
    if isinstance(answer, str) or not all(isinstance(g, str) for g in answer):
        return _not_yet("give a list of group names, e.g. ['stage8', 'head'].")
    from tlkit import load_backbone

    names = load_backbone(backbone, pretrained=False, num_classes=num_classes).group_names
    unknown = [g for g in answer if g not in names]
    if unknown:
        return _not_yet(f"unknown groups {unknown}; the groups are {names}.")
    ref = next(names[k:] for k in range(len(names) - 1, -1, -1)
               if trainable_after(names[k:], num_classes, backbone) >= min_params)
    got = [g for g in names if g in answer]
    n = trainable_after(got, num_classes, backbone)
    if got == ref:
        return _ok(f"{', '.join(ref)}: {n:,} trainable parameters; one group fewer would stay under "
                   f"{min_params:,}.")
    if got != names[len(names) - len(got):]:
        return _not_yet("unfreeze from the top: a contiguous run of groups ending with the head.")
    if n < min_params:
        return _not_yet(f"{n:,} parameters would train, under {min_params:,}. Unfreeze one more group.")
    return _not_yet(f"{n:,} parameters train, but fewer groups would already reach {min_params:,}.")


def check_frozen_except(model, trainable_groups: Sequence[str]) -> None:
    """05: exactly ``trainable_groups`` are trainable."""
    if _missing(model, "the model"):
        return
    trainable = [g for g in model.group_names if any(p.requires_grad for p in model.groups[g].parameters())]
    if trainable == list(trainable_groups):
        return _ok(f"trainable: {', '.join(trainable)}; everything else is frozen.")
    return _not_yet(f"trainable now: {trainable}; wanted {list(trainable_groups)}. Use the panel's toggles.")


# --------------------------------------------------------------------------
# 06: when the data shifts

def shifted_accuracy(head, model, dataset) -> float:
    """Reference: accuracy of ``head`` on the features of ``dataset`` (shift and transform applied) through ``model``."""
    from tlkit.features import evaluate_head, extract_features

    return evaluate_head(head, extract_features(model, dataset, progress=False))[1]


def check_combined_shift(answer, head, model, dataset) -> None:
    """06: the source head's accuracy on a composed shift (``dataset`` carries the shift and the preprocessing)."""
    n = _number_answer(answer, "an accuracy between 0 and 1")
    if n is None:
        return
    if n > 1:
        return _not_yet(f"{n:g} is a percentage; give the accuracy as a fraction between 0 and 1.")
    ref = shifted_accuracy(head, model, dataset)
    if abs(n - ref) <= 0.005:
        return _ok(f"{ref:.3f} on {len(dataset)} photos under {dataset.shift!r}. Compare it with each shift alone.")
    return _not_yet(f"{n:.3f} is not what the head scores under {dataset.shift!r}. Extract the features of the "
                    "shifted target photos with the same model and preprocessing, then evaluate the head on them.")


def adabn_statistics(model) -> int:
    """Reference: running means and variances (one of each per channel) over every BatchNorm layer of ``model``."""
    from tlkit.adapt import batchnorm_layers

    return sum(2 * bn.num_features for bn in batchnorm_layers(model))


def check_adabn_numbers(answer, model) -> None:
    """06: how many numbers AdaBN replaces in ``model``."""
    n = _number_answer(answer, "a number of statistics", positive=True)
    if n is None:
        return
    from tlkit.adapt import batchnorm_layers

    ref = adabn_statistics(model)
    layers = batchnorm_layers(model)
    params = sum(p.numel() for p in model.parameters())
    if n == ref:
        return _ok(f"{ref:,} statistics in {len(layers)} BatchNorm layers, {ref / params:.1%} of the "
                   f"{params:,} parameters, which AdaBN never touches.")
    if n == ref // 2:
        return _not_yet("that counts one statistic per channel; each channel has a running mean and a running variance.")
    if n == params:
        return _not_yet("that is the number of parameters: AdaBN changes none of them, only the running statistics.")
    return _not_yet(f"{n:g} is not it. Add up 2 x num_features over batchnorm_layers(model).")


def kmeans_purity(features, labels, restarts: int = 5, iters: int = 50, seed: int = 0) -> float:
    """Reference: purity of 2-means (best of ``restarts`` Lloyd runs) on ``features`` ``(N, D)`` against ``labels``."""
    import torch

    x = features.float()
    gen = torch.Generator().manual_seed(seed)
    best, best_cost = None, float("inf")
    for _ in range(restarts):
        centres = x[torch.randperm(len(x), generator=gen)[:2]].clone()
        for _ in range(iters):
            ids = torch.cdist(x, centres).argmin(1)
            centres = torch.stack([x[ids == j].mean(0) if (ids == j).any() else centres[j] for j in range(2)])
        cost = torch.cdist(x, centres).min(1).values.pow(2).sum().item()
        if cost < best_cost:
            best, best_cost = ids, cost
    agree = (best == labels).float().mean().item()
    return max(agree, 1 - agree)


def check_purity(answer, features, labels) -> None:
    """06: purity of k-means (k=2) on ``features`` against the true ``labels``."""
    n = _number_answer(answer, "a purity between 0.5 and 1")
    if n is None:
        return
    if n < 0.5 or n > 1:
        return _not_yet(f"{n:g} is not a purity: with two clusters and two classes it lies between 0.5 and 1 "
                        "(the better of the two ways to match clusters to classes).")
    ref = kmeans_purity(features, labels)
    if abs(n - ref) <= 0.03:
        return _ok(f"purity {ref:.3f} on {len(labels)} photos (0.5 is chance).")
    return _not_yet(f"{n:.3f} is far from the purity of 2-means on these features ({len(labels)} photos). "
                    "Cluster the features (kmeans), then compare the cluster ids with the labels (purity).")

# notebook 08: to the edge

def device_choice(table: Sequence[dict], max_slowdown: float = 2.0) -> str:
    """08: the most accurate candidate whose batch-1 latency is at most ``max_slowdown`` times the fastest's.

    Ties in accuracy go to the faster candidate. ``table`` rows need ``model``, ``accuracy`` and ``ms``.
    """
    fastest = min(r["ms"] for r in table)
    fits = [r for r in table if r["ms"] <= max_slowdown * fastest]
    return max(fits, key=lambda r: (r["accuracy"], -r["ms"]))["model"]


def check_device_choice(answer, table: Sequence[dict], max_slowdown: float = 2.0) -> None:
    """08: the candidate for a device that allows at most ``max_slowdown`` times the fastest latency."""
    if _missing(answer, "a model name from the table"):
        return
    names = [r["model"] for r in table]
    if answer not in names:
        return _not_yet(f"choose one of {names}.")
    row, ref = next(r for r in table if r["model"] == answer), device_choice(table, max_slowdown)
    fastest = min(r["ms"] for r in table)
    if row["ms"] > max_slowdown * fastest:
        return _not_yet(f"{answer} takes {row['ms']:.1f} ms per photo, over {max_slowdown:g} x the fastest "
                        f"({fastest:.1f} ms): too slow for this device.")
    if answer == ref:
        return _ok(f"{answer}: {row['accuracy']:.1%} at {row['ms']:.1f} ms per photo. Within the latency budget "
                   "nothing is more accurate; if the intervals overlap, the faster one is as good a choice.")
    best = next(r for r in table if r["model"] == ref)
    return _not_yet(f"{answer} fits, but {ref} also fits ({best['ms']:.1f} ms) and is more accurate "
                    f"({best['accuracy']:.1%}), or as accurate and faster.")


def soft_target(logits: Sequence[float], temperature: float, index: int = 0) -> float:
    """08: softmax(logits / temperature)[index], the probability a student learns from."""
    scaled = [v / temperature for v in logits]
    top = max(scaled)
    exps = [math.exp(v - top) for v in scaled]
    return exps[index] / sum(exps)


def check_soft_target(answer, logits: Sequence[float] = (2.0, -1.0), temperature: float = 4.0) -> None:
    """08: the teacher's probability of the first class at ``temperature``."""
    p = _number_answer(answer, "a probability between 0 and 1")
    if p is None:
        return
    ref, hard = soft_target(logits, temperature), soft_target(logits, 1.0)
    if abs(p - ref) <= 0.005:
        return _ok(f"{ref:.3f} at T = {temperature:g}, against {hard:.3f} at T = 1: the softened target keeps "
                   "telling the student how dog-like this cat looks.")
    if abs(p - hard) <= 0.005:
        return _not_yet(f"{hard:.3f} is the probability at T = 1. Divide the logits by T = {temperature:g} first.")
    return _not_yet(f"{p:g} is not it. Divide both logits by T, then take the softmax: e^a / (e^a + e^b).")


def int8_megabytes(parameters: int) -> float:
    """08: the size an int8 file needs for ``parameters`` weights: one byte each (scales and biases are few)."""
    return parameters / 1e6


def check_int8_megabytes(answer, parameters: int, tolerance: float = 0.2) -> None:
    """08: the int8 file size in MB predicted from the parameter count, within ``tolerance``."""
    mb = _number_answer(answer, "a size in MB", positive=True)
    if mb is None:
        return
    ref = int8_megabytes(parameters)
    if abs(mb - ref) <= tolerance * ref:
        return _ok(f"about {ref:.1f} MB: one byte per weight instead of four. The file adds a little for the "
                   "scales, zero points and 32-bit biases.")
    if abs(mb - 4 * ref) <= tolerance * 4 * ref:
        return _not_yet(f"{mb:g} MB is the fp32 size (four bytes per weight). int8 stores one byte per weight.")
    if abs(mb - ref * 8) <= tolerance * 8 * ref:
        return _not_yet("a byte has 8 bits, and an int8 weight is one byte: no factor 8.")
    return _not_yet(f"{mb:g} MB is not it. How many bytes does one int8 weight take? Multiply by {parameters:,}.")


# --------------------------------------------------------------------------
# 07: transfer learning for text (notebook 07; issue 18)

def text_subset(dataset, per_class: int | None, seed: int = 0):
    """At most ``per_class`` random sentences of each class of a TextDataset (None: the dataset itself)."""
    import random

    if per_class is None:
        return dataset
    rng = random.Random(seed)
    keep: list[int] = []
    for label in range(len(dataset.classes)):
        idx = [i for i, t in enumerate(dataset.targets) if t == label]
        keep += rng.sample(idx, min(per_class, len(idx)))
    keep.sort()
    return type(dataset)([dataset.sentences[i] for i in keep], [dataset.targets[i] for i in keep],
                         dataset.classes, dataset.transform, f"{dataset.name}[{per_class}/class]")


def check_token_count(answer, sentence: str, tokenizer) -> None:
    """07: the number of word pieces, [CLS] and [SEP] included, the tokenizer makes of ``sentence``."""
    n = _number_answer(answer, "a number of tokens")
    if n is None:
        return
    pieces = tokenizer.tokens(sentence)
    ref = len(pieces)
    if n == ref:
        split = [p for p in pieces if p.startswith("##")]
        return _ok(f"{ref} tokens: {' '.join(pieces)}"
                   + (f" ({len(split)} continuation piece(s) of rarer words)." if split else "."))
    if n == ref - 2:
        return _not_yet("close: you left out [CLS] and [SEP], which the tokenizer adds to every sentence.")
    if n < ref:
        return _not_yet(f"{n:g} is too few. Punctuation is a token of its own, and a word the vocabulary lacks "
                        "is split into pieces (marked ##). Look at tokenizer.tokens(sentence).")
    return _not_yet(f"{n:g} is too many. Frequent words are a single piece each; count again with "
                    "tokenizer.tokens(sentence).")


def text_trainable(k: int, num_classes: int = 2, backbone: str = "minilm") -> int:
    """Reference: trainable parameters of a text backbone after ``freeze_to(model, k)``."""
    from tlkit import count_parameters, freeze_to, load_backbone

    model = load_backbone(backbone, pretrained=False, num_classes=num_classes)
    freeze_to(model, k)
    return count_parameters(model)[0]


def check_text_trainable(answer, k: int = -2, num_classes: int = 2) -> None:
    """07: trainable parameters of MiniLM when only the last ``-k - 1`` layers and the head train."""
    n = _number_answer(answer, "a number of parameters")
    if n is None:
        return
    ref = text_trainable(k, num_classes)
    head = 384 * num_classes + num_classes
    if n == ref:
        return _ok(f"{ref:,} trainable parameters: {ref - head:,} in the layer(s), {head} in the head. One layer "
                   "is about 8% of MiniLM's 22.7 M; the word-piece embeddings alone hold 11.7 M.")
    if n == ref - head:
        return _not_yet("you counted the layer but not the new head (384 x 2 weights + 2 biases).")
    if ref - head - 2 * 2 * 384 <= n < ref - head:
        return _not_yet("close: did you count both LayerNorms (a scale and a shift of 384 each) and every bias?")
    return _not_yet(f"{n:g} is not it. Add up the four attention projections, the two feed-forward matrices "
                    "(384 x 1536 and 1536 x 384), their biases, the two LayerNorms and the head.")


def classify_text(model, sentences: Sequence[str], max_length: int | None = None) -> list[list[tuple[str, float]]]:
    """(class name, probability) pairs, most likely first, for each sentence: the model on raw text."""
    import torch

    tokens = model.tokenizer(max_length).encode(list(sentences))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = torch.softmax(model(tokens.to(next(model.parameters()).device)).float(), 1).cpu()
    finally:
        model.train(was_training)
    names = model.class_names or [str(i) for i in range(probs.shape[1])]
    return [sorted(zip(names, map(float, p)), key=lambda pair: -pair[1]) for p in probs]


def check_fooled(model, review, true_label, max_length: int | None = None) -> None:
    """07: a review with its true label ("neg" or "pos") that the model classifies wrongly."""
    if _missing(review, "a review (a string)") or _missing(true_label, "its true label, 'neg' or 'pos'"):
        return
    names = list(model.class_names or [])
    if not isinstance(review, str) or not review.strip():
        return _not_yet("the review must be a non-empty string.")
    if true_label not in names:
        return _not_yet(f"the label must be one of {names}, got {true_label!r}.")
    (predicted, p), *_ = classify_text(model, [review], max_length)[0]
    if predicted != true_label:
        return _ok(f"the model says {predicted!r} with p={p:.2f}, but it is {true_label!r}. Its errors are "
                   "instructive: which words pulled it the wrong way?")
    return _not_yet(f"the model gets it right ({predicted!r}, p={p:.2f}). Try sarcasm, negated praise, or "
                    "mixed verdicts.")
