# Source of notebooks/02_dog_vs_cat_classifier.ipynb (built by tools/make_notebooks.py; edit this file).

# %% [markdown]
# # 02 · A dog-vs-cat classifier, step by step
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/tlkit-course/tlkit/blob/main/notebooks/02_dog_vs_cat_classifier.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/tlkit-course/tlkit/main?urlpath=lab/tree/notebooks/02_dog_vs_cat_classifier.ipynb)
#
# The whole transfer-learning recipe on 2,000 photos of cats and dogs:
#
# 1. pick a pretrained model;
# 2. replace its 1000-class output layer with a 2-class one;
# 3. freeze the base, so its ImageNet weights are not destroyed;
# 4. feed it images preprocessed the way its weights expect;
# 5. train the new head (here on cached features: seconds, not hours);
# 6. evaluate, look at the mistakes, try your own photo, save and reload the model.
#
# **You will learn to** apply each step with one tlkit call, and to check each step with a
# number: the head before and after, the trainable parameters, the accuracy lost to wrong
# preprocessing, the time the cache saves.
#
# **Expected result (cpu profile, 160 px):** about 98% validation accuracy. On a 2-core
# laptop CPU the whole notebook takes about a minute: the one-off feature pass over
# 3,000 photos 15 to 45 seconds (depending on the CPU and on what else the machine is
# doing), training the head under a second.

# %% setup

# %% [markdown]
# ## Profile
#
# **cpu** (default; fits Binder's 2 GB) uses 160 px images and all 3,000 photos. **gpu**
# uses the backbone's native 224 px. **test** (`TLKIT_FAST=1`) uses 10 photos per class at
# 64 px so CI runs the notebook in seconds; its numbers mean nothing.

# %% profile
SETTINGS = {
    # image_size: pixels; per_class: training photos per class (None = all);
    # head_epochs: epochs of head training; probe_per_class: photos per class for the
    # preprocessing experiment.
    "cpu": dict(image_size=160, per_class=None, head_epochs=20, probe_per_class=50),
    "gpu": dict(image_size=224, per_class=None, head_epochs=30, probe_per_class=250),
    "test": dict(image_size=64, per_class=10, head_epochs=3, probe_per_class=5),
}[PROFILE]
SIZE = SETTINGS["image_size"]
SHOW_PROGRESS = not FAST and os.environ.get("TLKIT_PROGRESS") != "0"  # tqdm bars
torch.manual_seed(0)
print(f"profile: {PROFILE}  {SETTINGS}")

# %% [markdown]
# ## The data
#
# `cats_vs_dogs()` returns the training and validation splits as `ImageDataset`s: file
# lists with labels, no pixels loaded yet. It downloads the 68 MB zip on first use
# (or uses the folder in `TLKIT_DATA_DIR`).

# %%
# NBVAL_CHECK_OUTPUT
from tlkit.data import cats_vs_dogs, subset

train_all, val_all = cats_vs_dogs()
print(train_all)
print(val_all)
print("classes:", train_all.classes)

# %%
if SETTINGS["per_class"]:
    train = subset(train_all, per_class=SETTINGS["per_class"], seed=0)
    val = subset(val_all, per_class=SETTINGS["per_class"], seed=0)
else:
    train, val = train_all, val_all
print(f"using {len(train)} training and {len(val)} validation photos")

# %%
from tlkit import viz

sample = subset(train, per_class=4, seed=1)
viz.show_images(sample.files, titles=[sample.classes[t] for t in sample.targets], ncols=8)

# %% [markdown]
# ## Step 1 · Pick a pretrained model
#
# Every backbone tlkit knows has the same contract: named layer groups, a `head`, and the
# input size and normalisation its weights expect. Their sizes differ a lot. (Building them
# with `pretrained=False` needs no download; we only count parameters here. Notebook 04
# compares their speed and licences.)

# %%
# NBVAL_CHECK_OUTPUT
from tlkit import count_parameters, list_backbones, load_backbone

print(f"{'backbone':<20} {'parameters':>12} {'features':>9} {'groups':>7}")
for name in list_backbones():
    m = load_backbone(name, pretrained=False)
    print(f"{name:<20} {count_parameters(m)[1]:>12,} {m.num_features:>9} {len(m.group_names):>7}")
del m

# %% [markdown]
# We use **efficientnet_lite0**: small (4.7 M parameters), fast on a CPU, designed for
# phones, Apache-2.0 licensed, and its ImageNet weights install with pip, so it works offline.
#
# ## Step 2 · A new head for two classes
#
# The pretrained model ends in a layer with 1000 outputs, one per ImageNet class.
# `replace_head` swaps it for a freshly initialised layer with as many outputs as we have
# classes, whatever the original layer was called (`fc`, `classifier`, `_fc`).

# %%
# NBVAL_CHECK_OUTPUT
model = load_backbone("efficientnet_lite0")
print("before:", model.head)
model.replace_head(2, class_names=train.classes)
print("after: ", model.head)
print("classes:", model.class_names)

# %% [markdown]
# ## Step 3 · Freeze the base
#
# Freezing a group sets `requires_grad=False` on its parameters, so the optimizer never
# changes them. Its BatchNorm layers also keep their ImageNet statistics (more on that trap
# in notebook 03). The summary shows, per group, what will train.

# %%
# NBVAL_CHECK_OUTPUT
from tlkit import format_summary, freeze, trainable_summary

freeze(model, model.group_names[:-1])  # everything except "head"
print(format_summary(trainable_summary(model)))

# %% [markdown]
# ### Exercise 1: the recipe on another backbone
#
# Build a `resnet18` (use `pretrained=False`: its ImageNet weights would need a download,
# and we only check the structure), give it a 2-class head and freeze everything but the
# head. Its output layer is called `fc` in torchvision; with tlkit you do not need to know.

# %%
from course_checks import check_recipe

other = None  # your code
check_recipe(other)

# %% solution
# Solution
other = load_backbone("resnet18", pretrained=False)
other.replace_head(2, class_names=["cats", "dogs"])
freeze(other, other.group_names[:-1])
check_recipe(other)

# %% [markdown]
# ## Step 4 · Preprocessing the backbone expects
#
# The weights were trained on images of one size, scaled and normalised in one way. Inputs
# must match. The backbone says what it expects; `transforms_for(model)` builds the matching
# pipeline (resize, centre crop, scale to [0, 1], normalise). Note that Lite0 does *not* use
# the well-known ImageNet statistics (0.485, 0.456, 0.406): its TensorFlow weights expect
# pixels mapped to about [-1, 1].

# %%
# NBVAL_CHECK_OUTPUT
print("input size:", model.input_size)
print("mean:", tuple(round(v, 4) for v in model.mean))
print("std: ", tuple(round(v, 4) for v in model.std))

# %%
from tlkit.data import transforms_for
from tlkit.loaders import make_loader

preprocess = transforms_for(model, image_size=SIZE)  # evaluation: no augmentation
print(preprocess)
x, y, _ = next(iter(make_loader(sample.with_transform(preprocess), batch_size=8)))
print("a batch:", tuple(x.shape), f"values from {x.min():.2f} to {x.max():.2f}")
viz.show_images(x, titles=[sample.classes[i] for i in y], ncols=8, mean=model.mean, std=model.std)

# %% [markdown]
# Images smaller than 224 px (here 160 px on a CPU) work, a little less accurately: the
# network is convolutional, so it accepts any size, and we save half the compute.
#
# ### What wrong preprocessing costs
#
# Here is the same experiment four times on a small sample: extract features, train a head,
# measure validation accuracy. Only the preprocessing changes: the correct one, the ImageNet
# statistics instead of the model's own, raw 0–255 pixel values (forgetting to scale), and
# images much smaller than the model was trained on.

# %%
import time

from torchvision import transforms as T

from tlkit.features import extract_features, train_head

n = SETTINGS["probe_per_class"]
probe_train, probe_val = subset(train, per_class=n, seed=2), subset(val, per_class=n, seed=2)
crop = [T.Resize(round(SIZE * 256 / 224)), T.CenterCrop(SIZE)]
variants = {
    "correct (transforms_for)": preprocess,
    "ImageNet mean/std": T.Compose([*crop, T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]),
    "raw 0-255 pixels": T.Compose([*crop, T.ToTensor(), T.Normalize((0, 0, 0), (1 / 255,) * 3)]),  # x * 255
    f"{SIZE // 2} px images": transforms_for(model, image_size=SIZE // 2),
}
start = time.perf_counter()
probe = {}
for label, tf in variants.items():
    f_train = extract_features(model, probe_train.with_transform(tf), cache=False, progress=False)
    f_val = extract_features(model, probe_val.with_transform(tf), cache=False, progress=False)
    _, hist = train_head(f_train, f_val, epochs=20, seed=0)
    probe[label] = hist.best("val_acc")["val_acc"]
    print(f"{label:<26} validation accuracy {probe[label]:.1%}")
print(f"({len(probe_train)} training and {len(probe_val)} validation photos per run; {time.perf_counter() - start:.0f} s)")

# %% [markdown]
# A trained head can absorb a small shift in statistics, but unscaled pixels or a much
# smaller input cost real accuracy, and nothing warns you: the code runs either way. That
# is why tlkit derives preprocessing from the backbone instead of hard-coding it.
#
# ### Exercise 2: read the normalisation from the model
#
# Which mean and std does `efficientnet_lite0` expect? (Three numbers each.)

# %%
from course_checks import check_normalisation

mean, std = None, None  # your answer
check_normalisation(mean, std, model)

# %% solution
# Solution
mean, std = model.mean, model.std
check_normalisation(mean, std, model)

# %% [markdown]
# ## Step 5 · Feature extraction: train the new head on cached features
#
# With the body frozen, its output for a given image never changes. So we run it **once**
# over every image, keep the pooled 1280-number feature vectors on disk, and train the head
# on those. `extract_features` caches by backbone weights, preprocessing and file list: the
# second call, and notebooks 03–05, load the result instead of recomputing it.

# %%
start = time.perf_counter()
train_feats = extract_features(model, train.with_transform(preprocess), progress=SHOW_PROGRESS)
val_feats = extract_features(model, val.with_transform(preprocess), progress=SHOW_PROGRESS)
first = time.perf_counter() - start
print("train features:", tuple(train_feats.features.shape), "val features:", tuple(val_feats.features.shape))
print(f"first call: {first:.1f} s  (loaded from the cache: {train_feats.from_cache and val_feats.from_cache})")

start = time.perf_counter()
extract_features(model, train.with_transform(preprocess), progress=False)
extract_features(model, val.with_transform(preprocess), progress=False)
print(f"second call: {time.perf_counter() - start:.2f} s (from the cache)")

# %% [markdown]
# (When the features were already cached by an earlier run, both calls are fast; computing
# them takes 15 to 45 seconds for 3,000 photos at 160 px on a 2-core laptop CPU.)
#
# Now train the head: a single linear layer, 1280 → 2, with AdamW. Read `train_head` in
# `tlkit/features.py` to see the loop; it is short.

# %%
start = time.perf_counter()
head, history = train_head(train_feats, val_feats, epochs=SETTINGS["head_epochs"], lr=1e-3, seed=0)
best = history.best("val_acc")
print(f"{SETTINGS['head_epochs']} epochs in {time.perf_counter() - start:.1f} s; "
      f"best validation accuracy {best['val_acc']:.1%} (epoch {best['epoch']})")
viz.plot_history(history)

# %% [markdown]
# The head reaches its accuracy in the first epochs: the features already separate cats
# from dogs, and the head only has to find the boundary.
#
# ### Exercise 3: the head's learning rate
#
# Train a head with each of the learning rates 1e-4, 1e-3 and 1e-1 (`epochs=SETTINGS["head_epochs"]`,
# `seed=0`), and store the best validation accuracy of each in `lr_results`, a dict
# `{learning_rate: accuracy}`. Which one is best?

# %%
from course_checks import check_lr_results

LRS = (1e-4, 1e-3, 1e-1)
reference = {lr: train_head(train_feats, val_feats, epochs=SETTINGS["head_epochs"], lr=lr, seed=0)[1]
             .best("val_acc")["val_acc"] for lr in LRS}
lr_results = None  # your code: {1e-4: ..., 1e-3: ..., 1e-1: ...}
check_lr_results(lr_results, reference)

# %% solution
# Solution
lr_results = {}
for lr in LRS:
    _, h = train_head(train_feats, val_feats, epochs=SETTINGS["head_epochs"], lr=lr, seed=0)
    lr_results[lr] = h.best("val_acc")["val_acc"]
print(lr_results)
check_lr_results(lr_results, reference)

# %% [markdown]
# ## Step 6 · Evaluate
#
# Put the trained head into the model with `load_head`, so it classifies photos end to end. The evaluation
# itself runs on the cached validation features: `predictions_from_features` gives the same
# probabilities as running the whole network, without recomputing the body.

# %%
from tlkit.checkpoint import load_head
from tlkit.evaluate import confusion_matrix, predict, predictions_from_features, top_losses

load_head(model, head)
preds = predictions_from_features(model, val_feats)
print(f"validation accuracy: {preds.accuracy:.1%} on {len(preds)} photos")

check = subset(val, per_class=4, seed=3).with_transform(preprocess)  # a few photos, end to end
full = predict(model, check)
rows = [val_feats.files.index(f) for f in full.files]
print("whole network == cached features:", torch.allclose(full.probs, preds.probs[rows], atol=1e-4))

# %%
cm = confusion_matrix(preds.labels, preds.preds, num_classes=2)
viz.plot_confusion_matrix(cm, train.classes)

# %% [markdown]
# Rows are the true class, columns the prediction. The most instructive errors are the
# *confident* ones: `top_losses` sorts photos by their loss, highest first.

# %%
from pathlib import Path

mistakes = top_losses(preds, k=8)
for r in mistakes:
    print(f"{Path(r['file']).name:>14}  true {r['label']:<5} predicted {r['pred']:<5} with p={r['prob']:.2f}")
viz.show_predictions(preds, mistakes, ncols=4)

# %% [markdown]
# Typical confident mistakes: several animals in one photo, a person in front, an animal
# that is tiny or cut off, a dog that looks like a cat. Some are label noise in the data.
#
# ## Your own photo
#
# Point `MY_PHOTO` at any image file. In JupyterLab or on Binder, drag a photo into the file
# browser on the left (it lands next to this notebook) and write its name, e.g.
# `MY_PHOTO = "my_cat.jpg"`. On Colab, use the folder icon on the left, upload, then use
# `"/content/my_cat.jpg"`. By default it is a validation photo.

# %%
MY_PHOTO = val.files[len(val) // 2]  # replace with the path of your own photo

from tlkit.explain import classify_image

for name, p in classify_image(model, MY_PHOTO, transform=preprocess, topk=2):
    print(f"{name}: {p:.1%}")
viz.show_images([MY_PHOTO], titles=[Path(MY_PHOTO).name], ncols=1)

# %% [markdown]
# ## Save and reload
#
# `save_model` writes the weights, the backbone name, the class names and the image size in
# one file (written atomically). `load_model` rebuilds the model with no download, and loads
# with `weights_only=True`, so a model file cannot run code. The reloaded model must give
# exactly the same predictions.

# %%
# NBVAL_CHECK_OUTPUT
from tlkit.checkpoint import load_model, save_model

path = save_model(model, "runs/02_dog_vs_cat/model.pt", image_size=SIZE)
reloaded = load_model(path, expect_classes=["cats", "dogs"])
again = predict(reloaded, check)
print("saved to", Path(path).as_posix())
print("classes:", reloaded.class_names)
same = torch.equal(again.preds, full.preds) and torch.allclose(again.probs, full.probs, atol=1e-3)
print("same predictions after reloading:", same)

# %% [markdown]
# ## Summary
#
# | Step | tlkit call |
# |------|-----------|
# | pick a model | `load_backbone("efficientnet_lite0")` |
# | new output layer | `model.replace_head(2, class_names=...)` |
# | freeze the base | `freeze(model, model.group_names[:-1])` |
# | matching preprocessing | `transforms_for(model, image_size=...)` |
# | train the head | `extract_features(...)` once, then `train_head(...)` |
# | evaluate | `predictions_from_features`, `confusion_matrix`, `top_losses` |
# | save / load | `save_model`, `load_model` |
#
# **Next:** notebook 03 lets the body train too (fine-tuning) and compares strategies.
