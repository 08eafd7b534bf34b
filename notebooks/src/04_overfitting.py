# Source of notebooks/04_overfitting.ipynb (built by tools/make_notebooks.py; edit this file).

# %% [markdown]
# # 04 · Overfitting, and when transfer hurts
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/tlkit-course/tlkit/blob/main/notebooks/04_overfitting.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/tlkit-course/tlkit/main?urlpath=lab/tree/notebooks/04_overfitting.ipynb)
#
# Transfer learning's promise is "far less labelled data". This notebook measures it, then
# shrinks the data until a model overfits and measures each remedy. Finally it builds a
# task where ImageNet features are the wrong features, and compares pretrained backbones
# for size, speed and licence.
#
# **You will learn to**
# - read accuracy against the number of labelled images, with and without transfer;
# - recognise overfitting in train and validation curves;
# - apply augmentation, dropout, weight decay, early stopping, learning-rate schedules and
#   freezing more, and measure what each one changes;
# - spot negative transfer, and use earlier (low-level) features when late ones fail;
# - choose a pretrained model on evidence.
#
# **Expected results (cpu profile):** with 10 photos per class, transfer reaches about 95%
# validation accuracy, while a small CNN trained from scratch stays between 55% and 66% up to
# 1,000 per class. On a task unlike ImageNet, frozen ImageNet features reach about 63%
# against 100% for the small CNN. About 1.5 to 4 minutes on a laptop CPU.

# %% setup

# %% [markdown]
# ## Profile
#
# **cpu** reuses the 160 px features cached by notebook 02 (if you skipped it, the first
# feature pass takes 15 to 45 seconds) and trains the from-scratch models briefly at 64 px.
# **gpu** trains them properly. **test** (`TLKIT_FAST=1`) is a dry run.

# %% profile
SETTINGS = {
    # sizes: images per class for the data-size dial; scratch_*: the from-scratch model
    # (image size, training batches per run); remedy_*: the overfitting experiment;
    # synth_*: images per class and epochs for the synthetic task.
    "cpu": dict(image_size=160, sizes=(10, 50, 200, 1000), scratch_size=64, scratch_steps=30,
                remedy_per_class=20, remedy_epochs=30, synth_per_class=150, synth_epochs=4),
    "gpu": dict(image_size=224, sizes=(10, 50, 200, 1000), scratch_size=128, scratch_steps=600,
                remedy_per_class=20, remedy_epochs=40, synth_per_class=500, synth_epochs=8),
    "test": dict(image_size=64, sizes=(2, 4, 8), scratch_size=32, scratch_steps=2,
                 remedy_per_class=4, remedy_epochs=3, synth_per_class=8, synth_epochs=1),
}[PROFILE]
SIZE = SETTINGS["image_size"]
SHOW_PROGRESS = not FAST and os.environ.get("TLKIT_PROGRESS") != "0"
print(f"profile: {PROFILE}  {SETTINGS}")

# %%
# NBVAL_CHECK_OUTPUT
from tlkit.data import cats_vs_dogs, subset

train_all, val_all = cats_vs_dogs()
print(train_all)
print(val_all)

# %% [markdown]
# ## How much data do you need?
#
# Two ways to learn cats vs dogs from 10, 50, 200 and 1,000 labelled photos per class:
#
# - **transfer:** a head on the frozen ImageNet features (cached, so every size takes a second);
# - **from scratch:** a network with random weights, trained on the images. Deep networks
#   such as Lite0 need a lot of data *and* compute to train from zero, so on a CPU we give
#   a small three-block CNN (at 64 px) the same budget for every size: `scratch_steps`
#   batches of 32. The gpu profile trains it 20 times longer, at 128 px.
#
# Cached features are a tensor with one row per file, so a subset of the photos is a
# selection of rows; `select` below takes them.

# %%
import time

from tlkit import load_backbone
from tlkit.data import transforms_for
from tlkit.features import Features, extract_features, train_head

model = load_backbone("efficientnet_lite0")
preprocess = transforms_for(model, image_size=SIZE)
pool = subset(train_all, max(SETTINGS["sizes"]), seed=0)  # in the cpu profile: all 2,000 photos
val = val_all if not FAST else subset(val_all, 8, seed=0)
start = time.perf_counter()
train_feats = extract_features(model, pool.with_transform(preprocess), progress=SHOW_PROGRESS)
val_feats = extract_features(model, val.with_transform(preprocess), progress=SHOW_PROGRESS)
print(f"features of {len(pool)} + {len(val)} photos in {time.perf_counter() - start:.1f} s "
      f"(from the cache: {train_feats.from_cache and val_feats.from_cache})")


def select(feats, dataset):
    """The rows of cached ``feats`` that belong to the files of ``dataset`` (a subset)."""
    row = {f: i for i, f in enumerate(feats.files)}
    idx = torch.tensor([row[f] for f in dataset.files])
    return Features(feats.features[idx], feats.labels[idx], [feats.files[i] for i in idx], feats.classes)

# %% [markdown]
# The small CNN is built from plain PyTorch layers and wrapped in tlkit's `Backbone`
# contract (named groups and a head), so `fit`, `freeze` and `predict` work on it as on
# any pretrained model.

# %%
# NBVAL_CHECK_OUTPUT
from collections import OrderedDict

from torch import nn

from tlkit.backbones import Backbone
from tlkit.heads import make_head


def small_cnn():
    """Three conv blocks (32, 64, 128 channels) and a linear head, random weights."""
    torch.manual_seed(0)

    def block(c_in, c_out):  # (B, c_in, h, w) -> (B, c_out, h/2, w/2)
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))

    groups = OrderedDict(stem=block(3, 32), stage1=block(32, 64), stage2=block(64, 128))
    return Backbone("small_cnn", groups, make_head(128, 2), num_features=128, input_size=64,
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), weights=None)


print(f"small CNN: {sum(p.numel() for p in small_cnn().parameters()):,} parameters")

# %%
from tlkit.evaluate import predict
from tlkit.train import fit

SCRATCH = SETTINGS["scratch_size"]
scratch_val = subset(val_all, 100 if not FAST else 4, seed=0)


def train_from_scratch(net, photos):
    """fit() for the same number of images seen (at most 100 epochs); accuracy on scratch_val."""
    epochs = min(100, max(1, round(SETTINGS["scratch_steps"] * 32 / len(photos))))
    fit(net, photos, epochs=epochs, lr=3e-3, batch_size=32, image_size=SCRATCH, seed=0, progress=False)
    return predict(net, scratch_val.with_transform(transforms_for(net, image_size=SCRATCH))).accuracy, epochs


dial = []
for n in SETTINGS["sizes"]:
    photos = subset(pool, n, seed=0)
    _, h = train_head(select(train_feats, photos), val_feats, epochs=30, seed=0)
    transfer_acc = h.last()["val_acc"]  # the last epoch: no picking the best on validation data
    start = time.perf_counter()
    scratch_acc, epochs = train_from_scratch(small_cnn(), photos)
    dial.append(dict(per_class=n, transfer=transfer_acc, scratch=scratch_acc))
    print(f"{n:>5} per class: transfer {transfer_acc:.1%}   from scratch {scratch_acc:.1%} "
          f"({epochs} epochs, {time.perf_counter() - start:.0f} s)")

# %% [markdown]
# And the Lite0 architecture itself without its ImageNet weights (`pretrained=False`), on
# the most data, with the same budget:

# %%
torch.manual_seed(0)
lite0_scratch = load_backbone("efficientnet_lite0", pretrained=False, num_classes=2)
acc, _ = train_from_scratch(lite0_scratch, pool)
print(f"efficientnet_lite0, random weights, {max(SETTINGS['sizes'])} per class: {acc:.1%}")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.plot([d["per_class"] for d in dial], [d["transfer"] for d in dial], "o-", label="transfer (frozen ImageNet features)")
ax.plot([d["per_class"] for d in dial], [d["scratch"] for d in dial], "s--", label="from scratch (small CNN)")
ax.set(xscale="log", xlabel="labelled images per class", ylabel="validation accuracy", ylim=(0.4, 1.0))
ax.set_xticks([d["per_class"] for d in dial], [str(d["per_class"]) for d in dial])
ax.axhline(0.5, color="grey", lw=0.8)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Ten photos per class are enough for transfer. From scratch, accuracy climbs slowly with
# data and stays far below; the deep Lite0 from random weights hardly gets off the ground
# with this budget. With much more data *and* compute (the gpu profile) the from-scratch
# models improve, but not to what ImageNet features give for free.
#
# ## Watching a model overfit
#
# With few examples, a model can memorise them. Here a head with a 512-unit hidden layer
# (657,000 parameters) learns from 20 photos per class for many epochs. Watch the two curves:

# %%
from tlkit import viz

N = SETTINGS["remedy_per_class"]
small = subset(pool, N, seed=1)
small_feats = select(train_feats, small)
_, overfit = train_head(small_feats, val_feats, epochs=SETTINGS["remedy_epochs"], hidden=(512,), lr=1e-3, seed=0)
first, last = overfit[0], overfit.last()
low = overfit.best("val_loss", mode="min")
print(f"epoch {first['epoch']:>3}: train loss {first['train_loss']:.3f}, validation loss {first['val_loss']:.3f}")
print(f"epoch {low['epoch']:>3}: train loss {low['train_loss']:.3f}, validation loss {low['val_loss']:.3f}  <- lowest")
print(f"epoch {last['epoch']:>3}: train loss {last['train_loss']:.3f}, validation loss {last['val_loss']:.3f}")
viz.plot_history(overfit)

# %% [markdown]
# The training loss keeps falling towards zero; the validation loss turns round after a
# few epochs and climbs: the curves **diverge**. The model becomes more and more sure of
# its answers on photos it has memorised, and overconfident on new ones. With frozen
# features the *accuracy* suffers less than the loss (the features are good), which is
# exactly why you should watch both curves, not only accuracy.
#
# ## Remedies
#
# Each remedy below changes one thing in that same run (20 photos per class, the 512-unit
# head, the same epochs and seed). The table reports the model each run ends with: the
# last epoch's, or for early stopping the epoch it restored. To use `fit`, with its callbacks and schedules, on
# cached features, the "model" is a Backbone without a body: its input *is* the feature
# vector.

# %%
from torch.utils.data import TensorDataset

from tlkit import count_parameters
from tlkit.callbacks import EarlyStopping


def head_on_features(dropout=0.0, hidden=(512,)):
    """A Backbone with no body: (B, 1280) cached features -> (B, 2) logits."""
    torch.manual_seed(0)
    head = make_head(model.num_features, 2, hidden=hidden, dropout=dropout)
    return Backbone("head-on-features", OrderedDict(), head, model.num_features, weights=None)


def as_data(feats):
    return TensorDataset(feats.features, feats.labels)


def remedy(name, data=None, dropout=0.0, weight_decay=0.0, scheduler=None, callbacks=(), hidden=(512,)):
    """Trains the head with one change and records the final model's numbers in ``remedies``."""
    net = head_on_features(dropout, hidden)
    h = fit(net, as_data(data or small_feats), as_data(val_feats),
            epochs=SETTINGS["remedy_epochs"], lr=1e-3, batch_size=16, weight_decay=weight_decay,
            scheduler=scheduler, callbacks=list(callbacks), seed=0, progress=False)
    # Without early stopping the model is what the last epoch left; with it, the restored epoch.
    row = h.best("val_loss", mode="min") if callbacks else h.last()
    remedies.append(dict(remedy=name, trainable=count_parameters(net)[0], epoch=row["epoch"],
                         train_acc=row["train_acc"], val_acc=row["val_acc"], val_loss=row["val_loss"]))


remedies = []
remedy("none (baseline)")
remedy("dropout 0.5", dropout=0.5)
remedy("weight decay 1.0", weight_decay=1.0)
remedy("early stopping", callbacks=[EarlyStopping("val_loss", patience=3)])
remedy("LR schedule (one-cycle)", scheduler="onecycle")
remedy("freeze more (linear head)", hidden=())

# %% [markdown]
# **Data augmentation** makes more training examples from the same photos: random crops,
# flips (and with `augment="strong"`, colour changes). For cached features that means
# extracting features of several augmented views of each photo (`cache=False`, since every
# pass is different):

# %%
augment = transforms_for(model, train=True, image_size=SIZE)  # random resized crop + flip
views = [extract_features(model, small.with_transform(augment), cache=False, progress=False) for _ in range(8)]
augmented = Features(torch.cat([v.features for v in views]), torch.cat([v.labels for v in views]),
                     sum((v.files for v in views), []), small_feats.classes)
print(f"{len(small_feats)} photos -> {len(augmented)} augmented training examples")
remedy("augmentation (8 views)", data=augmented)

print(f"\n{'remedy':<26} {'trainable':>9} {'epoch':>5} {'train acc':>9} {'val acc':>8} {'val loss':>9}")
for r in remedies:
    print(f"{r['remedy']:<26} {r['trainable']:>9,} {r['epoch']:>5} {r['train_acc']:>9.1%} {r['val_acc']:>8.1%} "
          f"{r['val_loss']:>9.3f}")

# %% [markdown]
# Read the validation loss first: every remedy keeps the model from becoming as
# overconfident as the baseline. Accuracy moves by a point or two at most here, because
# the frozen body already does most of the work. (With 1,000 validation photos one photo is
# 0.1 points; differences under about 1.5 points are noise.)
#
# "Freeze more" here means training fewer parameters: the head without its hidden layer,
# 2,562 numbers instead of 657,000. On images it means freezing more layer groups; notebook
# 03's table measured that: with 100 photos, the fully frozen body beat every fine-tuned one.

# %% [markdown]
# ### Exercise 1: beat the baseline's validation loss
#
# Train `head_on_features(...)` with `fit` on `as_data(small_feats)` (validation:
# `as_data(val_feats)`, `epochs=SETTINGS["remedy_epochs"]`, `seed=0`), combining remedies as
# you like, so that the final validation loss is lower than the baseline's.

# %%
from course_checks import check_val_loss

baseline_loss = remedies[0]["val_loss"]
my_history = None  # your code: my_history = fit(...)
check_val_loss(my_history, baseline_loss)

# %% solution
# Solution
my_history = fit(head_on_features(dropout=0.5), as_data(small_feats), as_data(val_feats),
                 epochs=SETTINGS["remedy_epochs"], lr=1e-3, batch_size=16, weight_decay=1.0,
                 scheduler="onecycle", seed=0, progress=False)
check_val_loss(my_history, baseline_loss)

# %% [markdown]
# ## When transfer hurts
#
# Transfer works when source and target are alike. Here is a target unlike ImageNet: each
# 64 × 64 image shows three thin dark lines, all tilted a little to the **left** or all to
# the **right** of vertical, among random coloured blobs. The class is the tilt. No ImageNet
# class depends on a 5–20° tilt of thin lines, so the late layers have learned to ignore it.

# %%
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

from tlkit.data import image_folder


def draw_lines(path, tilt, rng, size=64):
    img = Image.new("RGB", (size, size), tuple(rng.randint(90, 160) for _ in range(3)))
    d = ImageDraw.Draw(img)
    for _ in range(6):  # distractors
        x, y, r = rng.randint(0, size), rng.randint(0, size), rng.randint(2, 6)
        d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    angle = math.radians(tilt * rng.uniform(5, 20))
    for _ in range(3):
        cx, cy, length = rng.uniform(10, size - 10), rng.uniform(10, size - 10), rng.uniform(15, 30)
        dx, dy = math.sin(angle) * length / 2, math.cos(angle) * length / 2
        d.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=(20, 20, 20), width=1)
    img.save(path)


rng = random.Random(0)
root = Path("runs/04_lines")
for split in ("train", "val"):
    for label, tilt in (("left", -1), ("right", 1)):
        (root / split / label).mkdir(parents=True, exist_ok=True)
        for i in range(SETTINGS["synth_per_class"]):
            draw_lines(root / split / label / f"{i:04d}.png", tilt, rng)
lines_train, lines_val = image_folder(root)
print(lines_train)
print(lines_val)
viz.show_images(subset(lines_train, 4, seed=0).files, titles=["left"] * 4 + ["right"] * 4, ncols=8)

# %% [markdown]
# ### Low-level vs high-level features
#
# The usual feature vector is the output of the last group, pooled. But every group's output
# can be pooled into a feature vector. Run the groups up to a stage, average over the
# spatial grid, train a head:

# %%
from tlkit.loaders import make_loader


@torch.no_grad()
def features_after(model, dataset, stage):
    """Pooled output of the groups from the stem up to ``stage``: Features (N, channels)."""
    model.eval()
    device = next(model.parameters()).device
    chunks, labels = [], []
    for x, y, _ in make_loader(dataset, batch_size=64, num_workers=0):  # tiny PNGs: no worker processes
        x = x.to(device)
        for name, group in model.groups.items():
            x = group(x)
            if name == stage:
                break
        chunks.append(x.mean(dim=(2, 3)).float().cpu())  # (B, C, h, w) -> (B, C)
        labels.append(y)
    return Features(torch.cat(chunks), torch.cat(labels), list(dataset.files), dataset.classes)


lines_tf = transforms_for(model, image_size=64)
depth = {}
for stage in ("stage2", "stage3", "stage4", "stage6", "stage8"):
    f_train = features_after(model, lines_train.with_transform(lines_tf), stage)
    f_val = features_after(model, lines_val.with_transform(lines_tf), stage)
    _, h = train_head(f_train, f_val, epochs=30, seed=0)
    depth[stage] = h.last()["val_acc"]
    kept = model.group_names[:model.group_names.index(stage) + 1]
    n_kept = sum(p.numel() for g in kept for p in model.groups[g].parameters())
    print(f"cut after {stage}: {n_kept:>9,} pretrained parameters kept, {f_train.features.shape[1]:>4} features "
          f"per image -> validation accuracy {depth[stage]:.1%}")

# %% [markdown]
# The early groups still encode orientation (their filters are oriented edge detectors, as
# you saw in notebook 01); by `stage8` the network has pooled it away in favour of "what
# object is this". A model can recognise a door and still not tell whether it is open:
# then earlier features are the useful ones, and more layers must be retrained. Cutting
# the network after an earlier group also changes how much is reused: here from a few
# thousand to millions of pretrained parameters.
#
# ### Negative transfer
#
# Now the standard recipe (frozen body, final features) against the small CNN trained from
# scratch on the lines, and against fine-tuning all of the pretrained network:

# %%
negative = {"frozen ImageNet features (stage8)": depth["stage8"]}
runs = (("small CNN from scratch", small_cnn(), 3e-3), ("fine-tune all of Lite0", None, 1e-3))
for name, net, lr in runs:
    if net is None:
        torch.manual_seed(0)
        net = load_backbone("efficientnet_lite0", num_classes=2)
    start = time.perf_counter()
    h = fit(net, lines_train, lines_val, epochs=SETTINGS["synth_epochs"], lr=lr, image_size=64, augment="none",
            seed=0, progress=False, num_workers=0)
    negative[name] = h.last()["val_acc"]
    print(f"{name}: validation accuracy per epoch {[round(a, 3) for a in h['val_acc']]} "
          f"({time.perf_counter() - start:.0f} s)")
print()
for name, acc in negative.items():
    print(f"{name:<36} {acc:.1%}")

# %% [markdown]
# On this target the reused high-level features are *worse* than a small network learned
# from scratch: that is negative transfer. Retraining the body (or using low-level
# features) recovers.
# How many layers to cut or retrain is an empirical question: measure, as above.
#
# ### Exercise 2: which features?
#
# For the line task, which depth works better: `"stage3"` or `"stage8"`?

# %%
from course_checks import check_better_layer

answer = None  # "stage3" or "stage8"
check_better_layer(answer, {k: depth[k] for k in ("stage3", "stage8")})

# %% solution
# Solution
answer = max(("stage3", "stage8"), key=depth.get)
check_better_layer(answer, {k: depth[k] for k in ("stage3", "stage8")})

# %% [markdown]
# ## Choosing a pretrained model
#
# Criteria: how close its source task is to yours, its size and speed on *your* hardware,
# its documentation and community, and its licence. Speed is measured here, on this CPU,
# with random weights (speed does not depend on the weights, and they need no download).

# %%
from tlkit import list_backbones

IMAGENET_TOP1 = {  # ImageNet-1k top-1 accuracy (%) published with each set of weights
    "efficientnet_lite0": 75.1, "resnet18": 69.8, "resnet34": 73.3, "resnet50": 80.9,
    "mobilenet_v3_small": 67.7, "mobilenet_v3_large": 75.3, "efficientnet_b0": 77.7, "convnext_tiny": 82.5,
}
LICENCE = {name: "BSD-3 code; ImageNet-trained weights, check terms" for name in IMAGENET_TOP1}
LICENCE["efficientnet_lite0"] = "Apache-2.0 (code and weights)"

table = []
x = torch.randn(8, 3, 160, 160)
for name in list_backbones():
    m = load_backbone(name, pretrained=False).eval()
    with torch.no_grad():
        m(x)  # warm-up
        start = time.perf_counter()
        for _ in range(2):
            m(x)
        speed = 16 / (time.perf_counter() - start)
    table.append(dict(backbone=name, params_M=count_parameters(m)[1] / 1e6, img_per_s=speed,
                      top1=IMAGENET_TOP1.get(name), licence=LICENCE.get(name, "?")))
    del m
print(f"{'backbone':<20} {'params (M)':>10} {'img/s (CPU, 160 px)':>20} {'ImageNet top-1':>15}  licence")
for r in table:
    print(f"{r['backbone']:<20} {r['params_M']:>10.1f} {r['img_per_s']:>20.0f} {r['top1']:>14.1f}%  {r['licence']}")

# %% [markdown]
# - **Size and speed:** MobileNet and EfficientNet(-Lite) were designed for phones and CPUs;
#   ResNet-50 and ConvNeXt are more accurate on ImageNet but several times slower here.
# - **Task relevance:** all of these are ImageNet models. For X-rays or satellite images,
#   look for weights pretrained on that domain (e.g. on Hugging Face Hub or timm).
# - **Documentation and community:** torchvision and timm models are used and tested by
#   thousands of projects; an unmaintained repository's weights may not even load next year.
# - **Licence:** torchvision's code is BSD-3-Clause, but its documentation warns that
#   pretrained weights may carry their own terms, derived from the data they were trained
#   on (ImageNet's terms allow non-commercial research use). EfficientNet-Lite0's weights
#   come from Google's Apache-2.0 release. Check before you ship a model commercially.
#
# ### Exercise 3: pick a backbone for a phone app
#
# The app can afford at most 6 million parameters and must be as fast as possible on a CPU.
# Which backbone does the table above suggest?

# %%
from course_checks import check_choice

choice = None  # a name from list_backbones()
check_choice(choice, table, max_params_m=6.0)

# %% solution
# Solution
choice = max((r for r in table if r["params_M"] <= 6.0), key=lambda r: r["img_per_s"])["backbone"]
check_choice(choice, table, max_params_m=6.0)

# %% [markdown]
# ## Summary
#
# - Transfer needs far fewer labelled images: ten per class already beat a model from
#   scratch on hundreds.
# - Overfitting shows as diverging train and validation curves; watch the loss, not only
#   the accuracy. Augmentation, dropout, weight decay, early stopping, learning-rate
#   schedules and freezing more all reduce it; measure which helps on your data.
# - When the target is unlike the source, late features can be worse than none (negative
#   transfer); earlier features, or retraining more layers, fix it.
#
# **Next:** notebook 05 puts all of this on sliders and buttons.
