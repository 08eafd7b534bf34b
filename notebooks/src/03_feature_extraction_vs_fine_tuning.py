# Source of notebooks/03_feature_extraction_vs_fine_tuning.ipynb (built by tools/make_notebooks.py; edit this file).

# %% [markdown]
# # 03 · Feature extraction vs fine-tuning
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/tlkit-course/tlkit/blob/main/notebooks/03_feature_extraction_vs_fine_tuning.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/tlkit-course/tlkit/main?urlpath=lab/tree/notebooks/03_feature_extraction_vs_fine_tuning.ipynb)
#
# In notebook 02 only the new head learned. Here the body learns too, in several ways:
#
# | Strategy | What trains |
# |----------|-------------|
# | feature extraction | the head only, on cached features |
# | partial fine-tuning (layer freezing) | the top groups and the head |
# | full fine-tuning | everything, early groups slower than late ones |
# | gradual unfreezing | the head first, then the rest |
#
# The rule of thumb says: when the target looks like ImageNet, feature extraction is as good
# as fine-tuning and far cheaper; when it does not, the body must change. This notebook
# tests both halves on two tasks, under fair conditions:
#
# - every strategy of a comparison gets **the same budget** (epochs, stated in each title),
#   the same photos, no augmentation, and is scored on **the same validation photos**;
# - every accuracy comes with its **95% interval**, and a difference that the interval cannot
#   resolve is called a **tie**;
# - where a second factor changes, a **control** run changes only that factor.
#
# **You will learn to** freeze and unfreeze layer groups by name, give each group its own
# learning rate, unfreeze during training, read the cost of each strategy (accuracy, time,
# trainable parameters), and avoid the BatchNorm trap in frozen layers.
#
# **Expected results (cpu profile):** on the photos, feature extraction and partial
# fine-tuning on all 2,000 photos are a tie; on edge sketches of the same photos, full
# fine-tuning beats feature extraction by more than the interval. A few minutes in all on a
# two-core CPU; full fine-tuning takes most of them.

# %% setup

# %% [markdown]
# ## Profile
#
# Fine-tuning runs the backward pass through every trainable group, for every photo of every
# epoch. On a CPU that is affordable in two ways: for partial fine-tuning, `fit` computes
# the frozen bottom's output once and trains the top on it (the *boundary cache*), so the
# **cpu** profile uses all 2,000 photos there; full fine-tuning runs on a sample of 600
# sketches. All at 128 px. **gpu** uses all photos at 224 px. **test** (`TLKIT_FAST=1`) is a
# dry run.

# %% profile
SETTINGS = {
    # photo_per_class / photo_val_per_class: photos per class for task 1 (None = all 1,000 / 500);
    # sketch_per_class / sketch_val_per_class: the same for task 2; epochs: the budget of every
    # strategy in the two tasks; side_epochs: the budget of the learning-rate experiments.
    "cpu": dict(image_size=128, photo_per_class=None, photo_val_per_class=None, sketch_per_class=300,
                sketch_val_per_class=200, epochs=4, side_epochs=1, batch_size=32),
    "gpu": dict(image_size=224, photo_per_class=None, photo_val_per_class=None, sketch_per_class=None,
                sketch_val_per_class=None, epochs=5, side_epochs=3, batch_size=64),
    "test": dict(image_size=64, photo_per_class=6, photo_val_per_class=6, sketch_per_class=6,
                 sketch_val_per_class=6, epochs=1, side_epochs=1, batch_size=8),
}[PROFILE]
SIZE, EPOCHS, BATCH = SETTINGS["image_size"], SETTINGS["epochs"], SETTINGS["batch_size"]
SIDE_EPOCHS = SETTINGS["side_epochs"]
BODY_LR, HEAD_LR = 3e-4, 3e-3  # the last body group's rate, and the new head's (the same in every run)
SHOW_PROGRESS = not FAST and os.environ.get("TLKIT_PROGRESS") != "0"
print(f"profile: {PROFILE}  {SETTINGS}")

# %%
# NBVAL_CHECK_OUTPUT
from tlkit.data import cats_vs_dogs, subset

train_all, val_all = cats_vs_dogs()
print(train_all)
print(val_all)


# %%
def sample(data, per_class):
    return subset(data, per_class, seed=0) if per_class else data


train = sample(train_all, SETTINGS["photo_per_class"])
val = sample(val_all, SETTINGS["photo_val_per_class"])
print(f"task 1, photos: {len(train)} training and {len(val)} validation photos at {SIZE} px")

# %% [markdown]
# Every strategy starts from the same pretrained weights and the same new head:

# %%
from tlkit import count_parameters, format_summary, freeze, freeze_to, load_backbone, trainable_summary, unfreeze


def fresh_model():
    """efficientnet_lite0 with ImageNet weights and a new 2-class head (same init every time)."""
    torch.manual_seed(0)
    return load_backbone("efficientnet_lite0", num_classes=2, class_names=train.classes)


model = fresh_model()
print(model.group_names)

# %% [markdown]
# ## Freezing layer groups
#
# `freeze_to(model, k)` freezes the first `k` groups and lets the rest train; negative `k`
# counts from the end. `freeze_to(model, -1)` is feature extraction (only the head);
# `freeze_to(model, 0)` trains everything.

# %%
# NBVAL_CHECK_OUTPUT
freeze_to(model, -3)  # partial fine-tuning: stage7, stage8 and the head train
print(format_summary(trainable_summary(model)))

# %% [markdown]
# ## Choosing what trains
#
# Layer groups are names, so any selection works, not only "the last k". Selective weight
# update: here only the early, generic groups and the head train; the rest keeps its
# ImageNet weights. (Notebook 04 shows a task where this is the right choice.)

# %%
# NBVAL_CHECK_OUTPUT
freeze(model, model.group_names)                # start with everything frozen
unfreeze(model, ["stem", "stage1", "stage2", "head"])
print(format_summary(trainable_summary(model)))

# %% [markdown]
# ### Exercise 1: partial fine-tuning
#
# Make `model` train exactly `stage7`, `stage8` and `head`, nothing else.

# %%
from course_checks import check_partial

# your code here
check_partial(model)

# %% solution
# Solution
freeze_to(model, -3)
check_partial(model)


# %% [markdown]
# ## How to compare two strategies
#
# An accuracy measured on *n* validation photos is a count of successes out of *n*, so it
# carries binomial noise: on 40 photos one photo is 2.5 points, on 1,000 it is 0.1. Every
# result below prints its 95% interval (Wilson), and every comparison prints the interval of
# the *difference*. When that interval contains zero, this validation set cannot tell the
# two apart: a **tie**, whatever the bar chart suggests. The accuracy is the one after the
# last epoch (choosing the best epoch by its validation score would flatter the runs with
# more epochs to choose from).

# %%
import time

from tlkit.evaluate import binomial_interval, compare_accuracies, difference_interval
from tlkit.features import extract_features, train_head
from tlkit.strategy import train_strategy

results = {}  # (task, strategy) -> accuracy, interval, budget, seconds


def record(task, strategy, history, n_val, seconds, trainable):
    """Stores and prints one run: accuracy after the last epoch, its 95% interval, budget and cost."""
    acc = history[-1]["val_acc"]
    low, high = binomial_interval(acc, n_val)
    results[task, strategy] = dict(task=task, strategy=strategy, val_acc=acc, ci=(low, high), n_val=n_val,
                                   epochs=len(history), seconds=seconds, trainable=trainable, history=history)
    print(f"{task}, {strategy}: val acc {acc:.3f} (95% interval {low:.3f}-{high:.3f} on {n_val} photos), "
          f"{len(history)} epoch{'s' if len(history) != 1 else ''}, {seconds:.0f} s, {trainable:,} trainable parameters")


def versus(task, a, b):
    """Prints a - b with the 95% interval of the difference; returns 'a', 'b' or 'tie'."""
    ra, rb = results[task, a], results[task, b]
    low, high = difference_interval(ra["val_acc"], rb["val_acc"], ra["n_val"])
    verdict = compare_accuracies(ra["val_acc"], rb["val_acc"], ra["n_val"])
    said = {"a": f"{a} ahead", "b": f"{b} ahead", "tie": "a tie"}[verdict]
    print(f"{task}: {a} - {b} = {ra['val_acc'] - rb['val_acc']:+.3f} "
          f"(95% interval {low:+.3f} to {high:+.3f}): {said}")
    return verdict


def run_features(task, train_data, val_data):
    """Feature extraction: the body runs once per photo (cached), then a new head trains EPOCHS epochs."""
    model = fresh_model()
    preprocess = transforms_for(model, image_size=SIZE)
    start = time.perf_counter()
    feats = [extract_features(model, d.with_transform(preprocess), progress=SHOW_PROGRESS)
             for d in (train_data, val_data)]
    head, history = train_head(*feats, epochs=EPOCHS, lr=HEAD_LR, batch_size=BATCH, seed=0)
    record(task, "feature extraction", history, len(val_data), time.perf_counter() - start,
           sum(p.numel() for p in head.parameters()))


def run_strategy(task, strategy, train_data, val_data, epochs=EPOCHS, **options):
    """train_strategy with the shared budget: same rates, no augmentation, same seed."""
    label = options.pop("label", None) or STRATEGIES[strategy]
    model = fresh_model()
    start = time.perf_counter()
    history = train_strategy(model, strategy, train_data, val_data, epochs=epochs, lr=BODY_LR, head_lr=HEAD_LR,
                             augment="none", image_size=SIZE, batch_size=BATCH, seed=0, progress=SHOW_PROGRESS,
                             **options)
    record(task, label, history, len(val_data),
           time.perf_counter() - start, count_parameters(model)[0])
    return model, history


# %% [markdown]
# `train_strategy` sets the freezing and the rates of the course's strategies: the new head
# learns at `HEAD_LR` (3e-3) in every run, feature extraction included, and each trainable
# body group at a rate between `BODY_LR / 10` (stem) and `BODY_LR` (last group). No run
# augments its photos, because the cached features of feature extraction cannot be
# augmented: so within a task, *only what trains* differs.
#
# ## Task 1: photos, which ImageNet already knows
#
# ImageNet has 118 dog breeds and 5 kinds of cat among its classes. Its features already
# separate cats from dogs, so the head alone should do the job. Feature extraction against
# partial fine-tuning (`stage7`, `stage8` and the head train), on all the training photos:

# %%
from tlkit.data import transforms_for
from tlkit.strategy import STRATEGIES

run_features("photos", train, val)

# %% [markdown]
# Partial fine-tuning has to run `stage7` and `stage8` forward and backward every epoch,
# but the groups below them are frozen: for a given photo they compute the same output every
# epoch. `fit` notices the frozen bottom (`cache_boundary="auto"`), runs it once per photo in
# the first epoch, keeps its output on disk, and then trains only the top:

# %%
from tlkit.boundary import activation_bytes, boundary_for

model, history = run_strategy("photos", "partial", train, val)
boundary = boundary_for(model)
first, later = history[0]["seconds"], [row["seconds"] for row in history.rows[1:]]
size_mb = activation_bytes(model, boundary, SIZE, len(train) + len(val)) / 2**20
print(f"boundary: {boundary} (every group below it frozen); cache: {size_mb:.0f} MiB for "
      f"{len(train) + len(val)} photos")
print(f"epoch 1 (runs the frozen bottom once, fills the cache): {first:.1f} s; "
      f"later epochs (the top only): {', '.join(f'{s:.1f}' for s in later)} s")

# %% [markdown]
# The later epochs cost a fraction of the first: they never touch the frozen bottom. That is
# what makes partial fine-tuning on all 2,000 photos affordable on a CPU.

# %% claim
# Claim check: the later epochs cost a fraction of the first, with all 2,000 photos.
from course_checks import claim

claim(len(train) == 2000 and boundary == "stage7" and max(later) < first / 2,
      "the later epochs cost a fraction of the first, with all 2,000 photos", photos=len(train),
      boundary=boundary, first_epoch_s=first, later_epochs_s=later)

# %%
photos_verdict = versus("photos", "partial fine-tuning", "feature extraction")

# %% [markdown]
# **On the photos the two are a tie**: the difference is within the interval on 1,000
# validation photos. Training two more groups on 2,000 photos buys nothing the pretrained
# features did not already have, and feature extraction got there in a fraction of the time.

# %% claim
# Claim check: on photos the difference is within the interval.
claim(photos_verdict == "tie" and len(val) == 1000, "on photos the difference is within the interval",
      partial=results["photos", "partial fine-tuning"]["val_acc"],
      features=results["photos", "feature extraction"]["val_acc"], n_val=len(val))

# %% [markdown]
# ## Task 2: sketches, which ImageNet has not seen
#
# Now the same cats and dogs as edge sketches: greyscale, edges only, black lines on white.
# `tlkit.shifts.edge_sketch` makes one from a photo, and `shifted(dataset, edge_sketch)`
# applies it to every image before any transform (the feature cache keys on it, so sketches
# never reuse the photos' features). The shapes are all still there; colour, fur texture and
# shading are gone.

# %%
from tlkit import viz
from tlkit.images import open_image
from tlkit.shifts import edge_sketch, shifted

sketch_train = shifted(sample(train_all, SETTINGS["sketch_per_class"]), edge_sketch)
sketch_val = shifted(sample(val_all, SETTINGS["sketch_val_per_class"]), edge_sketch)
print(f"task 2, sketches: {len(sketch_train)} training and {len(sketch_val)} validation images at {SIZE} px")
originals = [val_all.files[i] for i in (0, 1, 600, 601)]
viz.show_images([*originals, *(edge_sketch(open_image(f)) for f in originals)],
                titles=["photo"] * 4 + ["edge sketch"] * 4)

# %% [markdown]
# Three strategies on the sketches, each for the same number of epochs, scored on the same
# sketches:

# %%
run_features("sketches", sketch_train, sketch_val)
run_strategy("sketches", "partial", sketch_train, sketch_val)
_, full_history = run_strategy("sketches", "finetune", sketch_train, sketch_val)

# %%
sketch_verdict = versus("sketches", "full fine-tuning", "feature extraction")
partial_verdict = versus("sketches", "partial fine-tuning", "feature extraction")

# %% [markdown]
# **On the sketches, full fine-tuning beats feature extraction by more than the interval.**
# Why here and not on the photos? The early groups of an ImageNet network detect colour
# blobs, textures and gradients: the low-level statistics of photographs. A sketch has none
# of them: its pixels are mostly white, with thin dark lines. The frozen early groups still
# respond, but with patterns the later groups were never trained to read, so the pooled
# features separate cats from dogs less well, and no head on top can recover what they lost.
# Fine-tuning lets the early groups adapt to the new statistics. Partial fine-tuning, which
# keeps the early groups frozen and adapts only the last two, lands in between: ahead of
# feature extraction, but not by more than the interval.
#
# The sketch task also has fewer training photos than the photo task (600 against 2,000).
# Less data favours feature extraction, so the size difference cannot explain fine-tuning's
# win: it happened in spite of it.

# %% claim
# Claim check: fine-tuning wins on sketches by more than the interval.
sketch_acc = {s: results["sketches", s]["val_acc"] for s in ("feature extraction", "partial fine-tuning",
                                                               "full fine-tuning")}
claim(sketch_verdict == "a" and partial_verdict == "tie" and len(sketch_val) >= 200
      and sketch_acc["feature extraction"] < sketch_acc["partial fine-tuning"] < sketch_acc["full fine-tuning"],
      "on the sketches, full fine-tuning beats feature extraction by more than the interval; partial lands "
      "in between, within the interval of feature extraction", **sketch_acc, n_val=len(sketch_val))

# %% [markdown]
# ## The results, side by side

# %%
print(f"{'task':<9} {'strategy':<22} {'val acc':>8} {'95% interval':>14} {'epochs':>7} {'seconds':>8} "
      f"{'trainable':>10}")
for r in results.values():
    print(f"{r['task']:<9} {r['strategy']:<22} {r['val_acc']:>8.3f} {r['ci'][0]:>7.3f}-{r['ci'][1]:.3f} "
          f"{r['epochs']:>7} {r['seconds']:>8.0f} {r['trainable']:>10,}")
for task, data in (("photos", val), ("sketches", sketch_val)):
    rows = [r for r in results.values() if r["task"] == task]
    fig = viz.plot_bar(rows, "strategy", "val_acc", interval="ci",
                       title=f"{task}: {EPOCHS} epochs each, no augmentation, {SIZE} px; "
                             f"95% intervals on {len(data)} validation images")
    fig.axes[0].set_ylim(0.5, 1.0)

# %%
viz.plot_history({r["strategy"]: r["history"] for r in results.values() if r["task"] == "sketches"},
                 metrics=("val_acc",));

# %% [markdown]
# ## Learning rates for fine-tuning
#
# In every run above the new head learned at 3e-3 and the body groups at 3e-5 (stem) to
# 3e-4 (last group): *discriminative*, or layer-wise, learning rates. Two questions, each
# answered by changing one thing and nothing else (the sketches, the head rate,
# `SIDE_EPOCHS` epochs for every run, one in the cpu profile):
#
# 1. Do the layer-wise body rates matter, compared with one rate (3e-4) for the whole body?
# 2. What happens when the body's rate is much higher (1e-2)?
#
# `lr=` takes a dict `{group: rate}` as well as one rate or a `(low, high)` range; the
# optimizer's groups carry the layer-group names:

# %%
# NBVAL_CHECK_OUTPUT
from tlkit import param_groups

model = fresh_model()
freeze_to(model, 0)
layerwise = {g: BODY_LR / 10 * 10 ** (i / (len(model.group_names) - 2)) for i, g in enumerate(model.group_names[:-1])}
layerwise["head"] = HEAD_LR
optimizer = torch.optim.AdamW(param_groups(model, layerwise, weight_decay=0.01))
print(format_summary(trainable_summary(model, optimizer)))

# %%
from tlkit import set_bn_policy
from tlkit.train import fit


def run_rates(label, body_lr):
    """Full fine-tuning of the sketches with body rates body_lr (a rate or {group: rate}) and the shared head rate."""
    model = fresh_model()
    freeze_to(model, 0)
    set_bn_policy(model, "eval_all")  # as train_strategy does: BN keeps its ImageNet statistics
    rates = body_lr if isinstance(body_lr, dict) else {g: body_lr for g in model.group_names[:-1]}
    start = time.perf_counter()
    history = fit(model, sketch_train, sketch_val, epochs=SIDE_EPOCHS, lr={**rates, "head": HEAD_LR},
                  augment="none", image_size=SIZE, batch_size=BATCH, seed=0, progress=SHOW_PROGRESS)
    record("rates", label, history, len(sketch_val), time.perf_counter() - start, count_parameters(model)[0])


run_rates("layer-wise body 3e-5 to 3e-4", {g: r for g, r in layerwise.items() if g != "head"})
run_rates("one body rate 3e-4", BODY_LR)
run_rates("one body rate 1e-2", 1e-2)
layerwise_verdict = versus("rates", "layer-wise body 3e-5 to 3e-4", "one body rate 3e-4")
high_verdict = versus("rates", "one body rate 3e-4", "one body rate 1e-2")

# %% [markdown]
# Why hold the head's rate fixed? Compared with a full fine-tune whose *new head* also learns
# at a low body rate such as 1e-4, layer-wise rates would look better only because their
# head learns faster: a random head needs a higher rate. With the head's rate held fixed,
# the layer-wise body rates and one body rate of 3e-4 are **a tie** on these sketches: at
# these low rates, how the body's rate is spread across the groups matters less than the
# noise. The *size* of the body's steps does matter: at 1e-2 the large updates wreck the
# pretrained features before the head has learned anything useful, and accuracy falls to
# chance (about 0.5), far below the run at 3e-4.

# %% claim
# Claim check: layer-wise vs one body rate is a tie; a body rate of 1e-2 loses by more than the interval.
claim(layerwise_verdict == "tie" and high_verdict == "a" and results["rates", "one body rate 1e-2"]["val_acc"] <= 0.6,
      "layer-wise and one body rate are a tie; 1e-2 falls to chance, far below 3e-4",
      layerwise=results["rates", "layer-wise body 3e-5 to 3e-4"]["val_acc"],
      one_rate=results["rates", "one body rate 3e-4"]["val_acc"],
      high=results["rates", "one body rate 1e-2"]["val_acc"], n_val=len(sketch_val))

# %% [markdown]
# ### Exercise 2: build the layer-wise groups yourself
#
# Create the optimizer parameter groups for a fully unfrozen model, with rates from 1e-5 for
# the stem up to 1e-3 for the head.

# %%
from course_checks import check_layerwise

groups = None  # your code: param_groups(...)
check_layerwise(groups)

# %% solution
# Solution
m = fresh_model()
freeze_to(m, 0)
groups = param_groups(m, (1e-5, 1e-3))
check_layerwise(groups)

# %% [markdown]
# ## Gradual unfreezing
#
# Start with the head alone, so that its first, large random gradients do not flow into the
# body; then unfreeze the rest. `train_strategy(..., unfreeze_at=k)` does it with
# `GradualUnfreezing`: at the start of epoch `k` the frozen groups join the optimizer, each
# with its (lower) layer-wise rate. Here only the mechanism, on 100 photos for two epochs:
# the first epoch trains the head alone (on cached features: every body group is frozen),
# the second trains every group. A fair test of whether it helps needs a longer budget than
# this notebook's CPU profile allows: the head-only epoch is one epoch less for the body.

# %%
small_train, small_val = sample(train_all, 50 if not FAST else 6), sample(val_all, 200 if not FAST else 6)
model, history = run_strategy("small", "finetune", small_train, small_val, epochs=2, unfreeze_at=2,
                              label="gradual unfreezing")
for row in history.rows:
    print(f"epoch {row['epoch']}: groups with a learning rate: {len(row['lr'])}, {row['seconds']:.1f} s")

# %% claim
# Claim check: the head trains alone in epoch 1, every group in epoch 2.
claim([len(row["lr"]) for row in history.rows] == [1, len(model.group_names)],
      "the first epoch trains the head alone, the second every group",
      groups_per_epoch=[len(row["lr"]) for row in history.rows])

# %% [markdown]
# ## The BatchNorm trap
#
# BatchNorm layers normalise with *running statistics* (a mean and variance per channel)
# collected on ImageNet. In training mode a BN layer instead normalises with the statistics
# of the current batch and overwrites its running statistics with them. In a frozen group
# that is almost never what you want: the weights are ImageNet's, but the statistics drift
# towards a few small batches of your data, so the features the head learned from change.
#
# tlkit's default policy keeps BN in frozen groups in eval mode, even during `model.train()`.
# `set_bn_policy(model, "train")` switches the trap on. Two runs that differ only in the
# policy: the same frozen body, the same new head, 100 training photos in batches of 8,
# `EPOCHS` epochs each, scored on the same 400 validation photos. (This is a small
# experiment of its own, not the feature-extraction row of task 1: fewer photos and smaller
# batches, so compare its two rows with each other, not with that table.)

# %%
from tlkit.backbones import BN_TYPES


def bn_running_means(model):
    return [m.running_mean.clone() for m in model.modules() if isinstance(m, BN_TYPES)]


for policy in ("eval", "train"):
    model = fresh_model()
    freeze(model, model.group_names[:-1])  # feature extraction: only the head has trainable weights
    set_bn_policy(model, policy)
    before = bn_running_means(model)
    start = time.perf_counter()
    h = fit(model, small_train, small_val, epochs=EPOCHS, lr=HEAD_LR, batch_size=8, augment="none", image_size=SIZE,
            seed=0, progress=SHOW_PROGRESS)
    drift = max(float((a - b).abs().max()) for a, b in zip(bn_running_means(model), before))
    record("BN", f"BN policy {policy!r}", h, len(small_val), time.perf_counter() - start, count_parameters(model)[0])
    results["BN", f"BN policy {policy!r}"]["drift"] = drift
    print(f"   largest change of a running mean: {drift:.3f}")
bn_verdict = versus("BN", "BN policy 'eval'", "BN policy 'train'")

# %% [markdown]
# With the default policy the running statistics do not move at all and the head trains
# on exactly the features it is evaluated on. With BN in train mode, the frozen body's
# statistics drift towards the last batches of 8, and validation accuracy drops by more
# than the interval. This is the silent accuracy loss users of other libraries hit when
# they "freeze" a model by setting `requires_grad=False` only.

# %% claim
# Claim check: eval policy leaves the statistics alone; train policy moves them and loses accuracy.
claim(results["BN", "BN policy 'eval'"]["drift"] == 0 and results["BN", "BN policy 'train'"]["drift"] > 0
      and bn_verdict == "a", "BN in train mode drifts and loses accuracy beyond the interval",
      drift_eval=results["BN", "BN policy 'eval'"]["drift"], drift_train=results["BN", "BN policy 'train'"]["drift"],
      acc_eval=results["BN", "BN policy 'eval'"]["val_acc"], acc_train=results["BN", "BN policy 'train'"]["val_acc"])

# %% [markdown]
# ### Exercise 3: what does a frozen BN do?
#
# Under the default policy, after `model.train()`, which mode (`"eval"` or `"train"`) are
# the BatchNorm layers of a frozen group in? Check with `trainable_summary`.

# %%
from course_checks import check_bn_mode

bn_mode = None  # your answer
check_bn_mode(bn_mode)

# %% solution
# Solution
m = fresh_model()
freeze(m, m.group_names[:-1])
m.train()
bn_mode = trainable_summary(m)[0]["bn_mode"]  # the stem's BN
print(format_summary(trainable_summary(m)))
check_bn_mode(bn_mode)

# %% [markdown]
# ## When to use which
#
# | | target similar to ImageNet | target different (X-rays, satellites, spectrograms) |
# |---|---|---|
# | **little data** (tens to hundreds per class) | feature extraction | feature extraction from *earlier* groups, or partial fine-tuning of low groups |
# | **plenty of data** (thousands per class) | partial or full fine-tuning, low or layer-wise rates | full re-training, layer-wise rates, possibly from scratch |
#
# - Selective weight update and layer freezing are the same tool: choose the groups that
#   train. The more data, the more groups you can afford to train.
# - Fine-tune with a rate about 10× lower than for a new head, or with layer-wise rates.
# - Gradual unfreezing protects the body from the random head's first gradients.
# - Keep BatchNorm of frozen groups in eval mode (tlkit's default).
#
# **Next:** notebook 04 shrinks the data until models overfit, and shows when transfer hurts.

# %% [markdown]
# ## Exercises: decide, then check
#
# ### Exercise 4: predict a layer-wise rate
#
# With every group trainable, `fit(..., lr=(1e-5, 1e-3))` gives the stem 1e-5, the head
# 1e-3, and the groups between rates spread log-evenly. Which rate will `stage7` get? Work
# it out (a calculator is fine), then check with `param_groups(model, (1e-5, 1e-3))`.
#
# Hint: log-even means each group's rate is its neighbour's times the same factor. How many
# steps are there from `stem` to `head`?

# %%
from course_checks import check_layer_rate

stage7_lr = None  # your answer, e.g. 2e-4
check_layer_rate(stage7_lr, group="stage7", lr=(1e-5, 1e-3))

# %% solution
# Solution: 10 groups, 9 steps, factor 100 ** (1 / 9); stage7 is 7 steps above the stem
m = fresh_model()
freeze_to(m, 0)
stage7_lr = next(g["lr"] for g in param_groups(m, (1e-5, 1e-3)) if g["name"].startswith("stage7"))
print(f"stage7: {stage7_lr:.2e} = 1e-5 * 100 ** (7 / 9) = {1e-5 * 100 ** (7 / 9):.2e}")
check_layer_rate(stage7_lr, group="stage7", lr=(1e-5, 1e-3))

# %% [markdown]
# ### Exercise 5: find the bug
#
# This recipe is meant to fine-tune **the whole network** with layer-wise rates. It runs
# without an error. Which line defeats its purpose? Answer with the letter.
#
# ```python
# model = load_backbone("efficientnet_lite0", num_classes=2)   # A
# freeze_to(model, -1)                                          # B
# model.train()                                                 # C
# fit(model, train, val, epochs=3, lr=(1e-5, 1e-3))             # D
# ```
#
# Hint: run lines A to C on `fresh_model()` and look at `trainable_summary(model)` before
# you would call `fit`.

# %%
from course_checks import check_finetune_bug

bug_line = None  # "A", "B", "C" or "D"
check_finetune_bug(bug_line)

# %% solution
# Solution: line B freezes every group except the head
m = fresh_model()
freeze_to(m, -1)
m.train()
print(format_summary(trainable_summary(m)))
bug_line = "B"
check_finetune_bug(bug_line)

# %% [markdown]
# ### Exercise 6: how many BatchNorm layers will update their statistics?
#
# After `freeze_to(model, -3)` and `model.train()` with the default BatchNorm policy, how
# many BatchNorm layers of `efficientnet_lite0` are in train mode (and so update their
# running statistics on every batch)? Predict, then count.
#
# Hint: which groups still train after `freeze_to(model, -3)`, and what does the default
# policy do with the BatchNorm of the others? Count with `model.modules()` and
# `isinstance(module, torch.nn.BatchNorm2d)`.

# %%
from course_checks import check_bn_train_count

n_bn_train = None  # your answer
check_bn_train_count(n_bn_train, k=-3)

# %% solution
# Solution
m = fresh_model()
freeze_to(m, -3)
m.train()
n_bn_train = sum(isinstance(x, torch.nn.BatchNorm2d) and x.training for x in m.modules())
print(format_summary(trainable_summary(m)))
check_bn_train_count(n_bn_train, k=-3)
