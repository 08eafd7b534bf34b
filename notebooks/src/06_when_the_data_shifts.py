# Source of notebooks/06_when_the_data_shifts.ipynb (built by tools/make_notebooks.py; edit this file).

# %% [markdown]
# # 06 · When the data shifts
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/tlkit-course/tlkit/blob/main/notebooks/06_when_the_data_shifts.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/tlkit-course/tlkit/main?urlpath=lab/tree/notebooks/06_when_the_data_shifts.ipynb)
#
# Notebooks 02-05 trained and tested on the same kind of photos. In practice the photos a
# model meets later differ from those it was trained on: another camera, less light, a
# compressed upload, a drawing instead of a photo. The task stays the same (cat or dog?);
# the *domain* moves. This notebook measures what that costs, and tries the three ways to
# win it back that need no new labels, a few new labels, or no labels at all:
#
# 1. **Domain shift, measured:** the head of notebook 02 on the same validation photos,
#    greyscale, blurred, JPEG-compressed, dark, low in contrast, and turned into sketches.
# 2. **Adapting without labels (AdaBN):** re-estimate the BatchNorm statistics on the
#    unlabelled shifted photos. It repairs one kind of model and breaks another; you will
#    see both and learn which is which.
# 3. **A few target labels:** 0, 5, 20 and 100 labelled shifted photos per class.
# 4. **No labels at all:** cluster the frozen features and see whether the clusters are
#    cats and dogs.
# 5. **The kinds of transfer**, each pointing at the experiment of this course that shows it.
#
# **You will learn to** measure a model under shift with intervals, tell when BatchNorm
# adaptation helps and when it harms, decide how many target labels are worth collecting,
# and read a clustering of frozen features.
#
# **Expected results (cpu profile):** the source head keeps about 96% on clean and on
# greyscale photos and loses more than 15 points under heavy blur and JPEG compression.
# AdaBN costs the usual frozen-feature head 5 to 20 points on dark and low-contrast photos,
# and lifts a head trained on source-re-estimated statistics from about chance by more
# than 20 points. With heavy blur, 5 labelled target photos per class are worth far less
# than the 2,000 source photos; at 100 per class the target alone ties. k-means on frozen
# features groups cats and dogs with a purity above 0.9; on raw pixels, about chance.
# About 2 to 3 minutes on a quiet 2-core CPU, most of it in feature passes and AdaBN;
# several more when other programs keep the cores busy.

# %% setup

# %% [markdown]
# ## Profile
#
# **cpu** reuses the 160 px features of notebook 02 (if you skipped it, the first feature
# pass takes 15 to 45 seconds) and measures every shift on the same 200 validation photos.
# **gpu** uses 224 px and 500 validation photos. **test** (`TLKIT_FAST=1`) is a dry run
# whose numbers mean nothing.

# %% profile
SETTINGS = {
    # image_size: pixels; per_class: 02's training photos per class (None = all); target_per_class:
    # validation photos per class that every shift is measured on; severities: of each shift (1..5);
    # bn_per_class: photos per class of the AdaBN experiment; labels: labelled target photos per class;
    # label_val_per_class: validation photos per class of that experiment; top_labels: where the top
    # groups are fine-tuned too; top_epochs: their budget; pixels: image side for clustering raw
    # pixels; lab_per_class: photos per class in the ShiftLab panel.
    "cpu": dict(image_size=160, per_class=None, target_per_class=100, severities=(1, 3, 5), bn_per_class=100,
                labels=(0, 5, 20, 100), label_val_per_class=250, top_labels=(20, 100), top_epochs=4, pixels=32,
                lab_per_class=25),
    "gpu": dict(image_size=224, per_class=None, target_per_class=250, severities=(1, 2, 3, 4, 5), bn_per_class=250,
                labels=(0, 5, 20, 100), label_val_per_class=500, top_labels=(5, 20, 100), top_epochs=6, pixels=32,
                lab_per_class=100),
    "test": dict(image_size=64, per_class=10, target_per_class=4, severities=(1, 5), bn_per_class=4,
                 labels=(0, 2, 4), label_val_per_class=4, top_labels=(4,), top_epochs=1, pixels=8, lab_per_class=2),
}[PROFILE]
SIZE = SETTINGS["image_size"]
SEVERITIES = SETTINGS["severities"]
SHOW_PROGRESS = not FAST and os.environ.get("TLKIT_PROGRESS") != "0"
torch.manual_seed(0)
print(f"profile: {PROFILE}  {SETTINGS}")

# %% [markdown]
# ## The source model: notebook 02's head
#
# The *source domain* is the ordinary photos. We train the head of notebook 02 on their
# cached features (the same backbone, size and photos, so the cache of 02 is reused), and
# pick a fixed set of validation photos, `target`, that every shift below is applied to.

# %%
from tlkit import freeze, load_backbone
from tlkit.data import cats_vs_dogs, subset, transforms_for

train_all, val_all = cats_vs_dogs()
per_class = SETTINGS["per_class"]
train = subset(train_all, per_class, seed=0) if per_class else train_all
val = subset(val_all, per_class, seed=0) if per_class else val_all
target = subset(val, SETTINGS["target_per_class"], seed=0)
model = load_backbone("efficientnet_lite0", num_classes=2, class_names=train.classes)
freeze(model, model.group_names[:-1])
preprocess = transforms_for(model, image_size=SIZE)
print(f"source: {len(train)} training photos; every shift is measured on the same {len(target)} validation photos")

# %%
import time

from tlkit.evaluate import binomial_interval, compare_accuracies, difference_interval
from tlkit.features import Features, evaluate_head, extract_features, train_head

start = time.perf_counter()
train_feats = extract_features(model, train.with_transform(preprocess), progress=SHOW_PROGRESS)
val_feats = extract_features(model, val.with_transform(preprocess), progress=SHOW_PROGRESS)
print(f"features of {len(train_feats) + len(val_feats)} photos in {time.perf_counter() - start:.1f} s "
      f"(from the cache: {train_feats.from_cache and val_feats.from_cache})")


def rows(feats, files):
    """The cached features of ``files`` (a subset of ``feats``), in the order of ``files``."""
    where = {f: i for i, f in enumerate(feats.files)}
    idx = torch.tensor([where[f] for f in files])
    return Features(feats.features[idx], feats.labels[idx], list(files), feats.classes)


def features_of(m, data):
    """Pooled features of ``data`` through the body of ``m`` (cached on disk, keyed on body and shift)."""
    return extract_features(m, data.with_transform(preprocess), progress=False)


def accuracy(head, feats):
    return evaluate_head(head, feats)[1]


def show(label, acc, n):
    low, high = binomial_interval(acc, n)
    print(f"{label:<34} {acc:.3f}  (95% interval {low:.3f}-{high:.3f} on {n} photos)")


head, _ = train_head(train_feats, None, epochs=20, lr=1e-3, seed=0)
clean_feats = rows(val_feats, target.files)
clean_acc = accuracy(head, clean_feats)
show("source head, clean target photos", clean_acc, len(target))

# %% [markdown]
# ## 1 · Domain shift, measured
#
# `tlkit.shifts` has the shifts a deployed model meets, each with a severity from 1 (mild)
# to 5 (severe). `make_shift("blur:3")` builds one; `shifted(dataset, "blur:3")` applies it
# to every image of a dataset before its preprocessing. They are seeded and deterministic,
# and the feature cache keys on them, so a blurred photo never reuses the clean photo's
# features.

# %%
# NBVAL_CHECK_OUTPUT
from tlkit.shift_kinds import SHIFTS, make_shift
from tlkit.shifts import shifted

KINDS = ["greyscale", "blur", "jpeg", "dark", "contrast", "sketch"]
for name in KINDS:
    print(f"{name:<10} {SHIFTS[name].description}")

# %%
from tlkit import viz
from tlkit.images import open_image

photo = open_image(target.files[-1])
cells = [photo] + [make_shift(f"{k}:{s}")(photo) for k in KINDS for s in (1, 3, 5)]
viz.show_images(cells, titles=["clean"] + [f"{k}:{s}" for k in KINDS for s in (1, 3, 5)], ncols=7)

# %% [markdown]
# Now the source head, unchanged, on the target photos under every shift and severity. Each
# point is one feature pass over the same photos; the head is not retrained.

# %%
start = time.perf_counter()
sweep = {}
for name in KINDS:
    for severity in SEVERITIES:
        feats = features_of(model, shifted(target, f"{name}:{severity}"))
        sweep[name, severity] = accuracy(head, feats)
    print(f"{name:<10} " + "  ".join(f"{s}: {sweep[name, s]:.3f}" for s in SEVERITIES))
print(f"({len(sweep)} shifted feature passes of {len(target)} photos in {time.perf_counter() - start:.0f} s)")

# %%
import matplotlib.pyplot as plt


def plot_sweep(sweep, n, title):
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    xs = [0, *SEVERITIES]
    for name in KINDS:
        accs = [clean_acc] + [sweep[name, s] for s in SEVERITIES]
        bounds = [binomial_interval(a, n) for a in accs]
        ax.errorbar(xs, accs, yerr=[[a - lo for a, (lo, _) in zip(accs, bounds)],
                                    [hi - a for a, (_, hi) in zip(accs, bounds)]],
                    fmt="o-", capsize=3, label=name)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set(xlabel="severity (0 = clean)", ylabel=f"accuracy on the same {n} photos", ylim=(0.4, 1.0), title=title)
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    plt.show()


plot_sweep(sweep, len(target), "The source head under shift (95% intervals)")

# %%
worst = {name: sweep[name, max(SEVERITIES)] for name in KINDS}
verdicts = {name: compare_accuracies(clean_acc, worst[name], len(target)) for name in KINDS}
for name in KINDS:
    low, high = difference_interval(clean_acc, worst[name], len(target))
    said = {"a": "a drop beyond the interval", "b": "better than clean (!)", "tie": "a tie"}[verdicts[name]]
    print(f"clean - {name}:{max(SEVERITIES)} = {clean_acc - worst[name]:+.3f} "
          f"(95% interval {low:+.3f} to {high:+.3f}): {said}")

# %% [markdown]
# What the plot and the differences show, on the same 200 photos:
#
# - **Greyscale costs almost nothing.** Even with no colour at all (severity 5) the head is
#   within the interval of its clean accuracy: cats and dogs differ in shape and fur, not
#   in colour.
# - **Low light and low contrast cost less than 15 points** at severity 5, but more than the
#   interval.
# - **Heavy blur and heavy JPEG compression cost more than 15 points**: both wipe out the
#   fine texture (fur, whiskers, edges) the ImageNet features rely on.
# - **Sketches cost nothing measurable at severity 1** (a faint edge map over the photo, a
#   tie with the clean photos) **and more than 15 points as a pure sketch** at severity 5:
#   the further the style moves from a photograph, the more it costs.
#
# The head never complains: it outputs a class for every shifted photo, whatever the
# shift. Only a measurement on the new domain tells you what the shift costs.

# %% claim
# Claim check: guards the sentences above; runs when the notebooks are rebuilt
from course_checks import claim

drops = {name: clean_acc - acc for name, acc in worst.items()}
claim(0.94 <= clean_acc <= 0.98 and verdicts["greyscale"] == "tie" and all(verdicts[k] == "a" for k in KINDS if k != "greyscale")
      and max(drops["dark"], drops["contrast"]) < 0.15 and min(drops["blur"], drops["jpeg"]) > 0.15
      and compare_accuracies(clean_acc, sweep["sketch", 1], len(target)) == "tie" and drops["sketch"] > 0.15,
      "about 96% clean (expected result); greyscale a tie; dark and contrast cost under 15 points, beyond the interval; blur and JPEG over 15; "
      "sketch:1 a tie with clean, sketch:5 over 15 points", clean=clean_acc, **{f"{k}_5": v for k, v in worst.items()},
      sketch_1=sweep["sketch", 1], n=len(target))

# %% [markdown]
# ### Exercise 1: two shifts at once
#
# A photo taken in low light is often also blurred (a long exposure). Predict first: will
# the source head do worse on `"dark:3+blur:3"` (dark, then blurred) than on either shift
# alone at severity 3? Then measure its accuracy on `target` and store it in `combo_acc`.
#
# Hint: `make_shift` and `shifted` accept `"NAME:SEVERITY+NAME:SEVERITY"`; the sweep cell
# shows how to go from a shifted dataset to an accuracy.

# %%
from course_checks import check_combined_shift

combo_acc = None  # your code: the source head's accuracy on target under "dark:3+blur:3"
check_combined_shift(combo_acc, head, model, shifted(target, "dark:3+blur:3").with_transform(preprocess))

# %% solution
# Solution
combo_acc = accuracy(head, features_of(model, shifted(target, "dark:3+blur:3")))
print(f"dark:3+blur:3: {combo_acc:.3f}")
check_combined_shift(combo_acc, head, model, shifted(target, "dark:3+blur:3").with_transform(preprocess))

# %% [markdown]
# ## 2 · Adapting without labels: BatchNorm statistics (AdaBN)
#
# ### What the statistics are
#
# Every BatchNorm layer normalises each channel of its input with a stored mean and
# variance, its *running statistics*, then scales and shifts it with two learned parameters.
# The statistics are not learned by gradient descent: they are averages of the activations
# seen in training mode. Lite0's were collected on ImageNet. Notebook 03 showed the trap of
# letting frozen layers update them during training ("The BatchNorm trap").
#
# When the photos get darker, the activations of the first layers change: their means move
# and their spread shrinks, so the stored statistics no longer match them. **AdaBN** (Li et al., 2016) re-estimates every running mean
# and variance on the *unlabelled* target photos: no label, no gradient, no weight changes.
# `tlkit.adapt.adapt_batchnorm(model, unlabeled_data)` does exactly that. Here is the
# stem's first BatchNorm layer, before and after adapting to dark photos:

# %%
import copy

from tlkit.adapt import adapt_batchnorm, batchnorm_layers

ADAPT_SHIFTS = ["dark:5", "contrast:4", "sketch:5"]
dark = copy.deepcopy(model)
report = adapt_batchnorm(dark, shifted(target, ADAPT_SHIFTS[0]).with_transform(preprocess), progress=False)
before, after = batchnorm_layers(model)[0], batchnorm_layers(dark)[0]
print(f"re-estimated {report.layers} BatchNorm layers on {report.images} unlabelled images in {report.seconds:.0f} s")
print("stem BN, first 4 channels   running mean                    running variance")
for label, bn in (("ImageNet (pretrained)", before), (f"{ADAPT_SHIFTS[0]} photos (AdaBN)", after)):
    print(f"{label:<27} {[round(v, 2) for v in bn.running_mean[:4].tolist()]!s:<31} "
          f"{[round(v, 2) for v in bn.running_var[:4].tolist()]}")
same_weights = all(torch.equal(a, b) for a, b in zip(model.parameters(), dark.parameters()))
print("every weight unchanged:", same_weights)

# %% [markdown]
# On the dark photos the stem's statistics are far from ImageNet's: the variances of these
# channels shrink to less than a tenth (a dark photo is nearly uniform), and the means move.
# Every layer above sees the effect. No weight changed.

# %% claim
# Claim check: guards the sentences above; runs when the notebooks are rebuilt
var_before, var_after = before.running_var[:4].sum().item(), after.running_var[:4].sum().item()
claim(same_weights and var_after < var_before / 10, "the variances shrink to less than a tenth; no weight changed",
      var_before=var_before, var_after=var_after, same_weights=same_weights)

# %% [markdown]
# ### Why a head is tied to the statistics
#
# The head was trained on features computed *with* a given set of statistics. Change the
# statistics and every feature the head sees changes too, even though no weight moved. So
# adaptation helps only when the head expects "features normalised by the statistics of
# the photos they come from", and that is true only if it was trained that way.
#
# Two heads on the same 2 × `bn_per_class` source photos, identical except for the
# statistics their features were computed with:
#
# - **head A** on features computed with the ImageNet statistics (what tlkit's feature
#   extraction does, and what every head so far in this course was trained on);
# - **head B** on features computed after re-estimating the statistics on the source photos
#   (`adapt_batchnorm(model, source_photos)` first). It stands in for a model whose
#   BatchNorm *learned its training domain*, for example one fine-tuned with BatchNorm in
#   train mode, the way the PyTorch transfer-learning tutorial does it.
#
# Each head is then scored on the shifted photos twice: keeping the statistics its
# features were trained with, and after AdaBN on the (unlabelled) shifted photos.

# %%
bn_source = subset(train, SETTINGS["bn_per_class"], seed=1)
head_a, _ = train_head(rows(train_feats, bn_source.files), None, epochs=20, lr=1e-3, seed=0)
source_stats = copy.deepcopy(model)
adapt_batchnorm(source_stats, bn_source.with_transform(preprocess), progress=False)
head_b, _ = train_head(features_of(source_stats, bn_source), None, epochs=20, lr=1e-3, seed=0)

start = time.perf_counter()
adabn = {"clean": dict(a_keep=accuracy(head_a, clean_feats), b_keep=accuracy(head_b, features_of(source_stats, target)))}
for spec in ADAPT_SHIFTS:
    data = shifted(target, spec)
    adapted = dark if spec == ADAPT_SHIFTS[0] else copy.deepcopy(model)  # the dark one is adapted already
    if adapted is not dark:
        adapt_batchnorm(adapted, data.with_transform(preprocess), progress=False)  # no label is read
    target_feats = features_of(adapted, data)
    adabn[spec] = dict(a_keep=accuracy(head_a, features_of(model, data)), a_adapt=accuracy(head_a, target_feats),
                       b_keep=accuracy(head_b, features_of(source_stats, data)), b_adapt=accuracy(head_b, target_feats))
n = len(target)
print(f"{'target photos':<14} {'A keeps ImageNet':>17} {'A + AdaBN':>10} {'B keeps source':>15} {'B + AdaBN':>10}")
for spec, r in adabn.items():
    a_adapt, b_adapt = (f"{r[k]:.3f}" if k in r else "-" for k in ("a_adapt", "b_adapt"))
    print(f"{spec:<14} {r['a_keep']:>17.3f} {a_adapt:>10} {r['b_keep']:>15.3f} {b_adapt:>10}")
half = max(binomial_interval(0.8, n)[1] - 0.8, 0.8 - binomial_interval(0.8, n)[0])
print(f"(each on {n} photos: an accuracy near 0.8 is known to about ±{half:.2f}; "
      f"{len(ADAPT_SHIFTS)} adaptations in {time.perf_counter() - start:.0f} s)")

# %%
def adabn_verdicts(key_keep, key_adapt):
    """Per shift: 'a' (keeping wins beyond the interval), 'b' (adapting wins) or 'tie'."""
    out = {}
    for spec in ADAPT_SHIFTS:
        r = adabn[spec]
        low, high = difference_interval(r[key_adapt], r[key_keep], n)
        out[spec] = compare_accuracies(r[key_keep], r[key_adapt], n)
        print(f"{spec:<12} {key_adapt} - {key_keep} = {r[key_adapt] - r[key_keep]:+.3f} "
              f"(95% interval {low:+.3f} to {high:+.3f})")
    return out


print("head A (ImageNet statistics):")
harm = adabn_verdicts("a_keep", "a_adapt")
print("head B (source statistics):")
repair = adabn_verdicts("b_keep", "b_adapt")

# %% [markdown]
# Both directions, on the same photos and with the same AdaBN:
#
# - **Head A (ImageNet statistics): AdaBN harms it.** On the dark and the low-contrast
#   photos, adapting costs it points beyond the interval; on the sketches it is a tie at
#   best. Not one weight of the body or the head changed: only the features the head is
#   given did, and they are no longer the features it learned from.
# - **Head B (source statistics): AdaBN repairs it.** Kept on its source statistics, head
#   B falls to about chance (0.6 or less) under every shift here. AdaBN on the unlabelled
#   shifted photos lifts it by more than 20 points each time, beyond the interval.
# - **Yet the repaired head B does not beat head A left alone.** On every shift here it is
#   below head A with its ImageNet statistics, or a tie. Head B also starts lower on the
#   clean photos, beyond the interval: statistics from a few hundred photos of one narrow
#   domain normalise the features less well than ImageNet's.
#
# This is the lesson of notebook 03's BatchNorm trap, seen from the other side. There, BN
# in train mode let the statistics of a frozen body drift during training, and the head
# lost accuracy. Here the statistics move after training. Either way the head is tied to
# the statistics its features were computed with, and any change that the head did not
# train with costs accuracy unless the whole model was built to follow its data.

# %% claim
# Claim check: AdaBN harms head A and repairs head B, each beyond the interval
specs = ADAPT_SHIFTS
claim(harm[specs[0]] == "a" and harm[specs[1]] == "a" and harm[specs[2]] in ("a", "tie")
      and all(0.05 <= adabn[s]["a_keep"] - adabn[s]["a_adapt"] <= 0.2 for s in specs[:2])
      and all(repair[s] == "b" and adabn[s]["b_keep"] <= 0.6 and adabn[s]["b_adapt"] - adabn[s]["b_keep"] > 0.2
              for s in specs)
      and all(compare_accuracies(adabn[s]["a_keep"], adabn[s]["b_adapt"], n) in ("a", "tie") for s in specs)
      and compare_accuracies(adabn["clean"]["a_keep"], adabn["clean"]["b_keep"], n) == "a",
      "AdaBN harms head A on dark and contrast by 5 to 20 points (expected results; sketch: tie at best), repairs head B by 20+ points from 0.6 or "
      "less; repaired B never beats A; B starts lower on clean photos",
      harm=[harm[s] for s in specs], repair=[repair[s] for s in specs],
      **{f"{k}_{s}": v for s in adabn for k, v in adabn[s].items()})

# %% [markdown]
# ### When to adapt, and when to keep the source statistics
#
# - **Keep the source statistics** when the head was trained on features computed with
#   statistics that AdaBN would replace: a frozen-body head (feature extraction, notebook
#   02), or a fine-tune with BatchNorm kept in eval mode (tlkit's default, notebook 03).
#   The head then expects those features, and re-estimating breaks it.
# - **Adapt** when the model's BatchNorm learned its training domain: fine-tuned with
#   BatchNorm in train mode, or re-estimated on the source photos like head B. Its
#   features were always "normalised by the photos' own statistics"; AdaBN keeps that true
#   on the target.
# - **Adapt on enough photos, and on photos of one domain.** The statistics are averages;
#   a few dozen images, or a mix of clean and shifted ones, give other averages.
# - Whatever you choose, **measure it** with a few labelled target photos before you
#   trust it: the next section shows what a few labels buy anyway.
#
# `python -m tlkit evaluate MODEL.pt DIR --adapt-bn` prints the accuracy before and after
# adapting on DIR's photos, and warns when the model's head was trained on statistics that
# adaptation would replace.

# %% [markdown]
# ### Try it: the ShiftLab panel
#
# `ShiftLab` runs this experiment for any shift and severity you pick: a grid of shifted
# photos, and the accuracy of a model (here the source head on the frozen body, head A's
# kind) before and after AdaBN, with intervals. It works on a copy: your model keeps its
# statistics. The picture below it is the panel's result from the build, for readers
# without a kernel.

# %%
from tlkit.checkpoint import load_head
from widgets import ShiftLab

lab_model = copy.deepcopy(model)
load_head(lab_model, head)
lab = ShiftLab(lab_model, target, per_class=SETTINGS["lab_per_class"], image_size=SIZE, blocking=True)
lab.shift.value, lab.severity.value = "contrast", 4
lab.run()
lab

# %%
from IPython.display import HTML, Image, display

result = lab.results["contrast:4"]
display(Image(result["grid"]), HTML(lab.table.value))

# %% [markdown]
# ### Exercise 2: what AdaBN changes
#
# `adapt_batchnorm` leaves every weight alone. How many numbers does it replace in Lite0,
# counting each BatchNorm layer's running means and running variances (one of each per
# channel)? Compute it, then compare with the number of parameters.
#
# Hint: `batchnorm_layers(model)` lists the layers; each has `num_features` channels.

# %%
from course_checks import check_adabn_numbers

n_stats = None  # your answer
check_adabn_numbers(n_stats, model)

# %% solution
# Solution: a mean and a variance per channel of every BatchNorm layer
n_stats = sum(2 * bn.num_features for bn in batchnorm_layers(model))
print(f"{n_stats:,} statistics, against {sum(p.numel() for p in model.parameters()):,} parameters")
check_adabn_numbers(n_stats, model)

# %% [markdown]
# ## 3 · A few target labels
#
# AdaBN uses no label. How far do a few labelled *target* photos go? We take heavy blur,
# `blur:5` (a camera out of focus: the shift that cost the most above), label 0, 5, 20 or 100
# blurred training photos per class, and score on 500 blurred validation photos (more
# than above, for finer intervals):
#
# - **source + target, head:** a head on the 2,000 source photos plus the labelled target photos;
# - **target only, head:** a head on the labelled target photos alone (the body is still
#   ImageNet's: this is transfer from ImageNet, but not from our source photos);
# - **target only, top groups:** partial fine-tuning (`stage7`, `stage8` and the head,
#   `SETTINGS["top_epochs"]` epochs), as in notebook 03.

# %%
LABEL_SHIFT = "blur:5"
LABELS = SETTINGS["labels"]
pool = subset(train, max(LABELS), seed=2)  # the labelled target photos are drawn from here (nested)
label_target = subset(val, SETTINGS["label_val_per_class"], seed=0)  # more photos: finer intervals
pool_feats = features_of(model, shifted(pool, LABEL_SHIFT))
shift_val = features_of(model, shifted(label_target, LABEL_SHIFT))
n3 = len(label_target)


def first_per_class(feats, k):
    """The first ``k`` rows of each class: 5 per class is a subset of 20, 20 of 100."""
    idx = torch.cat([torch.nonzero(feats.labels == c).flatten()[:k] for c in range(len(feats.classes))])
    return Features(feats.features[idx], feats.labels[idx], [feats.files[i] for i in idx], feats.classes)


def joined(a, b):
    return Features(torch.cat([a.features, b.features]), torch.cat([a.labels, b.labels]), a.files + b.files,
                    a.classes)


few = {}
for k in LABELS:
    picked = first_per_class(pool_feats, k)
    mixed, _ = train_head(joined(train_feats, picked) if k else train_feats, None, epochs=20, lr=1e-3, seed=0)
    few[k, "source + target, head"] = accuracy(mixed, shift_val)
    if k:
        alone, _ = train_head(picked, None, epochs=100, lr=1e-3, batch_size=16, seed=0)
        few[k, "target only, head"] = accuracy(alone, shift_val)
    print(f"{k:>3} per class: " + ", ".join(f"{m} {a:.3f}" for (kk, m), a in few.items() if kk == k))

# %%
from tlkit.strategy import train_strategy

start = time.perf_counter()
shift_target = shifted(label_target, LABEL_SHIFT)
for k in SETTINGS["top_labels"]:
    picked = subset(pool, k, seed=3)
    torch.manual_seed(0)
    top = load_backbone("efficientnet_lite0", num_classes=2, class_names=train.classes)
    history = train_strategy(top, "partial", shifted(picked, LABEL_SHIFT), shift_target, epochs=SETTINGS["top_epochs"],
                             lr=3e-4, head_lr=3e-3, augment="none", image_size=SIZE, batch_size=16, seed=0,
                             progress=SHOW_PROGRESS)
    few[k, "target only, top groups"] = history[-1]["val_acc"]
    print(f"{k:>3} per class: target only, top groups {history[-1]['val_acc']:.3f}")
print(f"({time.perf_counter() - start:.0f} s)")

# %%
fig, ax = plt.subplots(figsize=(6, 3.4))
methods = ["source + target, head", "target only, head", "target only, top groups"]
for m in methods:
    ks = [k for k in LABELS if (k, m) in few]
    accs = [few[k, m] for k in ks]
    bounds = [binomial_interval(a, n3) for a in accs]
    ax.errorbar([max(k, 0.5) for k in ks], accs, yerr=[[a - lo for a, (lo, _) in zip(accs, bounds)],
                                                       [hi - a for a, (_, hi) in zip(accs, bounds)]],
                fmt="o-", capsize=3, label=m)
ax.set(xscale="log", xlabel="labelled target photos per class (0 drawn at 0.5)", ylim=(0.4, 1.0),
       ylabel=f"accuracy on {n3} {LABEL_SHIFT} photos", title=f"A few target labels ({LABEL_SHIFT}; 95% intervals)")
ax.axhline(0.5, color="grey", lw=0.8)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.show()


def versus(k, a, b, k_b=None):
    """Prints few[k, a] - few[k_b, b] with its 95% interval; returns 'a', 'b' or 'tie'."""
    k_b = k if k_b is None else k_b
    acc_a, acc_b = few[k, a], few[k_b, b]
    low, high = difference_interval(acc_a, acc_b, n3)
    verdict = compare_accuracies(acc_a, acc_b, n3)
    print(f"{k:>3} per class, {a} - {b}{'' if k_b == k else f' ({k_b} per class)'} = {acc_a - acc_b:+.3f} "
          f"(95% interval {low:+.3f} to {high:+.3f}): {dict(a='first ahead', b='second ahead', tie='a tie')[verdict]}")
    return verdict


most = max(LABELS)
side = {k: versus(k, "target only, head", "source + target, head") for k in LABELS if k}
gain = versus(most, "source + target, head", "source + target, head", k_b=0)
top = {k: versus(k, "target only, top groups", "target only, head") for k in SETTINGS["top_labels"]}

# %% [markdown]
# What a few labels buy, and what the source photos are worth:
#
# - **With few target labels, the source photos carry the model.** At 5 and 20 labelled
#   blurred photos per class, the head trained on the target alone is far behind the head
#   that also saw the 2,000 clean photos, beyond the interval.
# - **At 100 per class, the target alone does as well** (a tie): the 2,000 source photos
#   no longer add anything measurable. Past this point, more source data is dead weight,
#   and a source that differs more from the target can pull the model the wrong way:
#   negative transfer, seen from the target's side. (Notebook 04 showed it from the
#   features' side.)
# - **The labels themselves help only a little here:** 100 labelled blurred photos per
#   class lift the source + target head by a few points (between 3 and 10), at the edge of
#   what 500 photos can resolve. A heavily blurred photo has lost detail that no head can
#   recover.
# - **Fine-tuning the top groups** on the target alone is never worse than the head on
#   the same photos, and at 100 per class it is a tie: within this budget (a few epochs,
#   the early groups frozen), training more of the body does not undo the blur either.

# %% claim
# Claim check: guards the sentences above
small = [k for k in LABELS if 0 < k < most]
gain_points = few[most, "source + target, head"] - few[0, "source + target, head"]
claim(all(side[k] == "b" for k in small) and side[most] == "tie" and 0.03 <= gain_points <= 0.10
      and all(v in ("a", "tie") for v in top.values()) and top.get(most, "tie") == "tie",
      "target only far behind at 5 and 20 per class, a tie at 100; labels add 3 to 10 points; top groups never "
      "worse than the head, a tie at 100", side=list(side.values()), top=list(top.values()), gain=gain_points,
      **{f"{k}_{m.replace(' ', '_').replace(',', '').replace('+', 'and')}": v for (k, m), v in few.items()})

# %% [markdown]
# ## 4 · No labels at all: clustering
#
# Without any label, can we still find the two classes? Cluster the photos into two groups
# with k-means and check, afterwards, how well the groups match cats and dogs. The
# *purity* is the accuracy of the best matching of clusters to classes (0.5 is chance, 1.0
# is a perfect split). Once on the frozen 1280-number features, once on the raw pixels
# (each photo shrunk to `pixels` × `pixels` × 3 numbers), on the same validation photos.

# %%
def kmeans(x, k=2, restarts=5, iters=50, seed=0):
    """Cluster ids ``(N,)`` of the rows of ``x`` ``(N, D)``: the best of ``restarts`` runs of Lloyd's algorithm."""
    gen = torch.Generator().manual_seed(seed)
    best, best_cost = None, float("inf")
    for _ in range(restarts):
        centres = x[torch.randperm(len(x), generator=gen)[:k]].clone()  # (k, D)
        for _ in range(iters):
            ids = torch.cdist(x, centres).argmin(1)  # (N,)
            centres = torch.stack([x[ids == j].mean(0) if (ids == j).any() else centres[j] for j in range(k)])
        cost = torch.cdist(x, centres).min(1).values.pow(2).sum().item()
        if cost < best_cost:
            best, best_cost = ids, cost
    return best


def purity(ids, labels):
    """Accuracy of the best one-to-one matching of two clusters to two classes."""
    agree = (ids == labels).float().mean().item()
    return max(agree, 1 - agree)


# %%
from torchvision import transforms as T

from tlkit.loaders import make_loader

px = SETTINGS["pixels"]
tiny = val.with_transform(T.Compose([T.Resize(px), T.CenterCrop(px), T.ToTensor()]))
pixels = torch.cat([x.flatten(1) for x, _, _ in make_loader(tiny, batch_size=100)])  # (N, 3*px*px)
feature_ids = kmeans(val_feats.features)
pixel_ids = kmeans(pixels)
clusters = {"frozen features": purity(feature_ids, val_feats.labels), "raw pixels": purity(pixel_ids, val_feats.labels)}
for label, p in clusters.items():
    show(f"k-means on {label}: purity", p, len(val))

# %%
from IPython.display import display

for label, ids in (("frozen features", feature_ids), ("raw pixels", pixel_ids)):
    picks = [i for j in (0, 1) for i in torch.nonzero(ids == j).flatten()[:5].tolist()]
    display(viz.show_images([val.files[i] for i in picks], ncols=5,
                            titles=[f"{label}: cluster {int(ids[i])}" for i in picks]))

# %% [markdown]
# **The frozen features find cats and dogs without a single label:** k-means on them
# reaches a purity above 0.9, while on raw pixels the two clusters are about chance (0.6 or
# less), beyond the interval. Two photos of cats are rarely close pixel by pixel; the
# pixel clusters group something else (look at the photos above: not cats against dogs).
# The source task (ImageNet's labels) taught the body a space in which the target's
# classes already lie apart. That is unsupervised transfer: the *target* task (grouping
# photos) has no labels at all.

# %% claim
# Claim check: guards the sentences above
claim(clusters["frozen features"] > 0.9 and clusters["raw pixels"] <= 0.6
      and compare_accuracies(clusters["frozen features"], clusters["raw pixels"], len(val)) == "a",
      "features purity above 0.9, pixels about chance (0.6 or less), beyond the interval",
      features=clusters["frozen features"], pixels=clusters["raw pixels"], n=len(val))

# %% [markdown]
# ### Exercise 3: clustering the blurred photos
#
# The frozen features cluster the clean photos well. Do they still cluster the *blurred*
# ones (`LABEL_SHIFT`)? Run `kmeans` on the features of the blurred validation photos
# (`shift_val`, computed in section 3) and store the purity in `blur_purity`. Before you
# run it, decide: above or below the source head's accuracy on the same photos
# (`few[0, "source + target, head"]`), which had labels to learn from?
#
# Hint: `purity(ids, labels)` needs the cluster ids and `shift_val.labels`.

# %%
from course_checks import check_purity

blur_purity = None  # your code
check_purity(blur_purity, shift_val.features, shift_val.labels)

# %% solution
# Solution
blur_purity = purity(kmeans(shift_val.features), shift_val.labels)
print(f"purity on {LABEL_SHIFT}: {blur_purity:.3f}; source head: {few[0, 'source + target, head']:.3f}")
check_purity(blur_purity, shift_val.features, shift_val.labels)

# %% [markdown]
# ## 5 · The kinds of transfer, and where this course shows each
#
# Notebook 01 named the kinds of transfer. Here they are again, sharper, each with the
# experiment in this course that shows it. Two questions sort them: *is the task the
# same?* and *where are the labels?*
#
# | Kind | Task, source → target | Labels in the source | Labels in the target | What differs | Shown in |
# |------|-----------------------|----------------------|----------------------|--------------|----------|
# | **Inductive** | different tasks | usually (ImageNet's 1000 classes) | yes, some | the task (and often the domain) | 02: a head on frozen features; 03: fine-tuning; 04: how many labels, and when it hurts |
# | **Transductive** | the same task | yes | none; the unlabelled target data is at hand during adaptation | the domain: the inputs or their distribution (another language counts too) | 06 §2: AdaBN adapts on the very photos it then classifies, without their labels |
# | **Domain adaptation** | the same task, the same kind of input | yes | none (*unsupervised* DA, the transductive case) or a few (*supervised* DA) | only the distribution of the inputs (light, blur, style) | 06 §1: what the shift costs; §2: AdaBN (unsupervised DA); §3: a few target labels (supervised DA); 03: sketches with many labels |
# | **Unsupervised** | the target task is itself unsupervised (clustering, dimensionality reduction) | not needed (here ImageNet's were used) | none | the task has no labels at all | 06 §4: k-means on frozen features against raw pixels |
#
# - **Transductive is a setting, domain adaptation a problem.** Transductive transfer says
#   where the labels are (source only, target data unlabelled but available). Domain
#   adaptation says what differs (only the input distribution); it is transductive when the
#   target has no labels, and *supervised* domain adaptation when it has a few, as in §3.
# - **Unsupervised transfer is about the target task, not only the missing labels.** A
#   classifier adapted without target labels (§2) is unsupervised *domain adaptation*;
#   unsupervised *transfer* solves a task that has no labels by nature, such as grouping
#   photos (§4).
# - **Negative transfer** can come from either side: features that do not fit the target
#   (04, "When transfer hurts"), or source data that no longer adds anything once the
#   target has labels of its own (§3).
#
# **Summary**
#
# | Question | tlkit call |
# |----------|-----------|
# | what does a shift cost? | `shifted(val, "blur:3")`, `extract_features`, `evaluate_head`, `binomial_interval` |
# | adapt without labels | `adapt_batchnorm(model, shifted_unlabelled_photos)`, only for a model whose BN follows its data |
# | evaluate a saved model under shift | `python -m tlkit evaluate MODEL.pt DIR --shift blur:3 --adapt-bn` |
# | a few target labels | `train_head` on source + target features, or `train_strategy(..., "partial", ...)` |
# | no labels | k-means on `extract_features(...).features` |
#
# **Next:** notebook 07 carries the same recipe to text.
