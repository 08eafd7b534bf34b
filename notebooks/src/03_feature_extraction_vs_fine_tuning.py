# Source of notebooks/03_feature_extraction_vs_fine_tuning.ipynb (built by tools/make_notebooks.py; edit this file).

# %% [markdown]
# # 03 · Feature extraction vs fine-tuning
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/tlkit-course/tlkit/blob/main/notebooks/03_feature_extraction_vs_fine_tuning.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/tlkit-course/tlkit/main?urlpath=lab/tree/notebooks/03_feature_extraction_vs_fine_tuning.ipynb)
#
# In notebook 02 only the new head learned. Here the body learns too, in several ways, on
# the same photos with the same seed, so the results can be compared:
#
# | Strategy | What trains |
# |----------|-------------|
# | feature extraction | the head only, on cached features |
# | partial fine-tuning (layer freezing) | the top groups and the head |
# | full fine-tuning | everything, with one low learning rate |
# | discriminative learning rates | everything, early groups slower than late ones |
# | gradual unfreezing | the head first, then more groups epoch by epoch |
#
# **You will learn to** freeze and unfreeze layer groups by name, give each group its own
# learning rate, unfreeze during training, read the cost of each strategy (accuracy, time,
# trainable parameters), and avoid the BatchNorm trap in frozen layers.
#
# **Expected results (cpu profile, 100 training photos):** feature extraction about 97%
# validation accuracy in 1 to 3 seconds; the fine-tuning variants about 90% or less in 5–20
# seconds each; BatchNorm in train mode costs several points. One to two minutes in all on a
# laptop CPU.

# %% setup

# %% [markdown]
# ## Profile
#
# Fine-tuning runs the backward pass through the body for every photo of every epoch, so
# on a CPU it only fits a small sample: **cpu** trains on 50 photos per class at 128 px for
# 3 epochs. **gpu** uses all 2,000 photos at 224 px. **test** (`TLKIT_FAST=1`) is a dry run.

# %% profile
SETTINGS = {
    # per_class: training photos per class (None = all); val_per_class: validation photos
    # per class; epochs: for every fine-tuning run; batch_size: images per step.
    "cpu": dict(image_size=128, per_class=50, val_per_class=50, epochs=3, batch_size=16),
    "gpu": dict(image_size=224, per_class=None, val_per_class=None, epochs=5, batch_size=64),
    "test": dict(image_size=64, per_class=6, val_per_class=6, epochs=1, batch_size=8),
}[PROFILE]
SIZE, EPOCHS, BATCH = SETTINGS["image_size"], SETTINGS["epochs"], SETTINGS["batch_size"]
SHOW_PROGRESS = not FAST and os.environ.get("TLKIT_PROGRESS") != "0"
print(f"profile: {PROFILE}  {SETTINGS}")

# %%
# NBVAL_CHECK_OUTPUT
from tlkit.data import cats_vs_dogs, subset

train_all, val_all = cats_vs_dogs()
print(train_all)
print(val_all)

# %%
train = subset(train_all, SETTINGS["per_class"], seed=0) if SETTINGS["per_class"] else train_all
val = subset(val_all, SETTINGS["val_per_class"], seed=0) if SETTINGS["val_per_class"] else val_all
print(f"{len(train)} training and {len(val)} validation photos at {SIZE} px")

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
# ## Two strategies, side by side
#
# **Feature extraction**: the body runs once per photo (cached, as in notebook 02), then a
# head trains on the features. **Fine-tuning**: `fit` trains the chosen groups on the images
# themselves; every epoch runs the body forward *and* backward. Read the loop that opens
# `tlkit/train.py`: `Trainer.fit` turns once per epoch, `_train_epoch` once per batch.

# %%
import time

from tlkit.data import transforms_for
from tlkit.features import extract_features, train_head
from tlkit.train import fit

results, histories = {}, {}

model = fresh_model()
preprocess = transforms_for(model, image_size=SIZE)
start = time.perf_counter()
train_feats = extract_features(model, train.with_transform(preprocess), progress=SHOW_PROGRESS)
val_feats = extract_features(model, val.with_transform(preprocess), progress=SHOW_PROGRESS)
head, history = train_head(train_feats, val_feats, epochs=30, lr=1e-3, seed=0)
results["feature extraction"] = dict(val_acc=history.best("val_acc")["val_acc"],
                                     seconds=time.perf_counter() - start,
                                     trainable=sum(p.numel() for p in head.parameters()))


def report(name):
    r = results[name]
    print(f"{name}: best val acc {r['val_acc']:.1%}, {r['seconds']:.1f} s, {r['trainable']:,} trainable parameters")


report("feature extraction")

# %% [markdown]
# Partial fine-tuning: stage7, stage8 and the head train. `lr=(1e-4, 1e-3)` spreads the rates
# log-evenly from the first trainable group to the head, so the new head learns fastest.
# `fit` returns a `History` with one row per epoch.

# %%
def run(name, model, **kwargs):
    """fit() with the shared settings; records accuracy, time and trainable parameters."""
    start = time.perf_counter()
    history = fit(model, train, val, epochs=EPOCHS, batch_size=BATCH, image_size=SIZE, seed=0,
                  progress=SHOW_PROGRESS, **kwargs)
    results[name] = dict(val_acc=history.best("val_acc")["val_acc"], seconds=time.perf_counter() - start,
                         trainable=count_parameters(model)[0])
    histories[name] = history
    report(name)
    return history


model = fresh_model()
freeze_to(model, -3)
run("partial fine-tuning", model, lr=(1e-4, 1e-3))

# %% [markdown]
# ## Full re-training
#
# Every group trains. This is the choice when the target differs a lot from ImageNet or
# when there is plenty of data. First with one low learning rate for every group, the new
# head included:

# %%
model = fresh_model()
freeze_to(model, 0)
run("full fine-tuning", model, lr=1e-4)

# %% [markdown]
# One low rate is safe for the pretrained body but slow for the new, randomly initialised
# head: in a few epochs it has not caught up. The layer-wise rates further down fix that.
#
# ## Why fine-tuning needs a lower learning rate
#
# Why not simply raise the rate? The pretrained weights are already good; large steps
# destroy what they encode before the new head has learned anything useful. The same full
# fine-tuning at 1e-2:

# %%
model = fresh_model()
freeze_to(model, 0)
history_high = fit(model, train, val, epochs=EPOCHS, lr=1e-2, batch_size=BATCH, image_size=SIZE, seed=0,
                   progress=SHOW_PROGRESS)
print("validation accuracy per epoch, lr=1e-2:", [round(a, 3) for a in history_high["val_acc"]])
print("validation accuracy per epoch, lr=1e-4:", [round(a, 3) for a in histories["full fine-tuning"]["val_acc"]])

# %% [markdown]
# ## Layer-wise learning rates
#
# Discriminative learning rates give every group its own rate: early groups (generic
# edges and textures) change least, late groups and the head most. `lr=(low, high)` spreads
# rates log-evenly from the first to the last trainable group; a dict `{group: rate}` sets
# them by hand. The optimizer's groups carry the layer-group names:

# %%
# NBVAL_CHECK_OUTPUT
from tlkit import param_groups

model = fresh_model()
freeze_to(model, 0)
optimizer = torch.optim.AdamW(param_groups(model, (1e-5, 1e-3), weight_decay=0.01))
print(format_summary(trainable_summary(model, optimizer)))

# %%
run("discriminative rates", model, lr=(1e-5, 1e-3))

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
# Start with the head alone, so that it stops sending large random gradients into the body;
# then unfreeze groups from the top down. `GradualUnfreezing({epoch: [groups]})` does it at
# the start of the given epochs; each unfrozen group joins the optimizer as a new parameter
# group with its own (lower) rate.

# %%
from tlkit.callbacks import GradualUnfreezing

model = fresh_model()
freeze_to(model, -1)                                  # epoch 1: head only
later = model.group_names[:-1]
schedule = {2: later[-2:], 3: later[:-2]} if EPOCHS >= 3 else {1: later}  # then the top, then the rest
unfreezing = GradualUnfreezing(schedule, lr=1e-4)
history = run("gradual unfreezing", model, lr=1e-3, callbacks=[unfreezing])
for row in history.rows:
    print(f"epoch {row['epoch']}: groups with a learning rate: {len(row['lr'])}, val_acc {row['val_acc']:.3f}")

# %% [markdown]
# ## The results, side by side

# %%
from tlkit import viz

print(f"{'strategy':<22} {'val acc':>8} {'seconds':>8} {'trainable params':>17}")
for name, r in results.items():
    print(f"{name:<22} {r['val_acc']:>8.1%} {r['seconds']:>8.1f} {r['trainable']:>17,}")
viz.plot_bar([{"strategy": k, "val_acc": v["val_acc"]} for k, v in results.items()], "strategy", "val_acc",
             title=f"{len(train)} training photos, {EPOCHS} epochs, {SIZE} px")

# %%
viz.plot_history(histories, metrics=("val_acc",))

# %% [markdown]
# With 100 training photos, feature extraction is the most accurate and by far the
# cheapest: a million trainable parameters cannot be pinned down by a hundred photos in
# three epochs. Among the fine-tuning variants, the ones that let the new head learn fast
# while the body moves slowly (partial, layer-wise, gradual) do best. With all 2,000 photos
# and more epochs (the gpu profile), fine-tuning catches up with feature extraction or
# passes it. (On 100 validation photos, one photo is one percentage point: treat gaps of a
# few points as noise.)
#
# ## The BatchNorm trap
#
# BatchNorm layers normalise with *running statistics* (a mean and variance per channel)
# collected on ImageNet. In training mode a BN layer instead normalises with the statistics
# of the current batch and overwrites its running statistics with them. In a frozen group
# that is almost never what you want: the weights are ImageNet's, but the statistics drift
# towards a few small batches of your data, so the features the head learned from change.
#
# tlkit's default policy keeps BN in frozen groups in eval mode, even during `model.train()`.
# `set_bn_policy(model, "train")` switches the trap on. Same frozen body, same head, batches
# of 8:

# %%
from tlkit import set_bn_policy
from tlkit.backbones import BN_TYPES


def bn_running_means(model):
    return [m.running_mean.clone() for m in model.modules() if isinstance(m, BN_TYPES)]


bn = {}
for policy in ("eval", "train"):
    model = fresh_model()
    freeze(model, model.group_names[:-1])  # feature extraction: only the head has trainable weights
    set_bn_policy(model, policy)
    before = bn_running_means(model)
    h = fit(model, train, val, epochs=EPOCHS, lr=1e-3, batch_size=8, image_size=SIZE, seed=0,
            progress=SHOW_PROGRESS)
    after = bn_running_means(model)
    drift = max(float((a - b).abs().max()) for a, b in zip(after, before))
    bn[policy] = dict(val_acc=h.best("val_acc")["val_acc"], drift=drift)
    print(f"BN policy {policy!r}: best val acc {bn[policy]['val_acc']:.1%}, "
          f"largest change of a running mean {drift:.3f}")

# %% [markdown]
# With the default policy the running statistics do not move at all and the head trains
# on exactly the features it is evaluated on. With BN in train mode, the frozen body's
# statistics drift and validation accuracy drops. This is the silent accuracy loss users
# of other libraries hit when they "freeze" a model by setting `requires_grad=False` only.
#
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
