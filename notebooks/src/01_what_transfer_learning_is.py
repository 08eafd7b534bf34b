# Source of notebooks/01_what_transfer_learning_is.ipynb (built by tools/make_notebooks.py; edit this file).

# %% [markdown]
# # 01 · What transfer learning is
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/tlkit-course/tlkit/blob/main/notebooks/01_what_transfer_learning_is.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/tlkit-course/tlkit/main?urlpath=lab/tree/notebooks/01_what_transfer_learning_is.ipynb)
#
# A network trained on ImageNet has already learned to see. In this notebook you use one
# before training anything, look inside it, and measure why reusing it is so much cheaper
# than starting from zero.
#
# **You will learn to**
# - run a pretrained ImageNet model on real cat and dog photos and read its top-5 guesses;
# - tell the *source task* (ImageNet's 1000 classes) from the *target task* (cats vs dogs);
# - see what early and late layers respond to (filters and feature maps);
# - count how few parameters a new task needs to train, and time a feature pass against training.
#
# **Run time:** about 20 seconds on a laptop CPU (all cells). No training happens here.

# %% setup

# %% [markdown]
# ## Profile
#
# Every notebook of the course picks one of three profiles in the cell below:
# **cpu** (the default: fits a Binder machine with 2 GB of RAM), **gpu** (when CUDA is
# available: more data) and **test** (`TLKIT_FAST=1`: tiny subsets, so that CI can run
# the notebook in seconds; its numbers mean nothing).

# %% profile
SETTINGS = {
    "cpu": dict(per_class=50),    # validation photos per class for the zero-training test
    "gpu": dict(per_class=500),   # all of them
    "test": dict(per_class=8),
}[PROFILE]
torch.manual_seed(0)
print(f"profile: {PROFILE}  {SETTINGS}")

# %% [markdown]
# ## Reusing what a network already knows
#
# `load_backbone` returns a network with ImageNet weights. For `efficientnet_lite0` the
# weights ship inside a pip package, so this works offline. The model still has its
# original output layer: 1000 ImageNet classes.
#
# The photos come from the course's dog-vs-cat dataset (`tlkit.data.cats_vs_dogs`, which
# downloads it on first use).

# %%
from pathlib import Path

from tlkit import count_parameters, load_backbone
from tlkit.data import cats_vs_dogs, subset
from tlkit.explain import classify_image, imagenet_classes

train, val = cats_vs_dogs()
model = load_backbone("efficientnet_lite0")  # pretrained=True is the default
print(train)
print(val)

# %% [markdown]
# Four validation photos, two of each class. `classify_image` preprocesses a photo the way
# the backbone's weights expect and returns the top classes with their probabilities.

# %%
cats = [f for f, t in zip(val.files, val.targets) if t == 0][:2]
dogs = [f for f, t in zip(val.files, val.targets) if t == 1][:2]
photos = cats + dogs
for path in photos:
    top5 = classify_image(model, path, topk=5)
    print(f"{Path(path).name:>14}: " + ", ".join(f"{name} {p:.0%}" for name, p in top5))

# %%
from tlkit import viz

titles = [classify_image(model, p, topk=1)[0][0] for p in photos]
viz.show_images(photos, titles=titles, ncols=4)

# %% [markdown]
# The model was never told about "cats" and "dogs" as two classes, yet it names breeds,
# and its wrong guesses are mostly near misses (another small furry animal). That
# knowledge is what we will reuse.
#
# ## Source task and target task
#
# - The **source task** is what the network was trained for: ImageNet classification,
#   1.28 million photos in 1000 classes.
# - The **target task** is what we want: two classes, cats and dogs, from 2,000 photos.
#
# The two tasks are related: ImageNet's classes include many dog breeds and a few cat breeds.

# %%
# NBVAL_CHECK_OUTPUT
names = imagenet_classes()
print(len(names), "ImageNet classes")
print("dog breeds, classes 151-268:", len(range(151, 269)), "e.g.", names[151], "...", names[268])
print("domestic cats, classes 281-285:", names[281:286])

# %% [markdown]
# ### Exercise 1: a dog-vs-cat classifier with no training at all
#
# `probs` below holds the ImageNet head's probabilities (one row of 1000 per photo) for a
# set of validation photos, and `labels` their true classes (0 = cats, 1 = dogs).
# Predict "dog" where the summed probability of the dog breeds (classes 151–268) is larger
# than that of the cats (281–285), and compute the accuracy as a number between 0 and 1.

# %%
from course_checks import check_zero_shot
from tlkit.evaluate import predict

sample = subset(val, per_class=SETTINGS["per_class"], seed=0)
out = predict(model, sample, batch_size=32)  # the 1000-way ImageNet head: out.probs is (N, 1000)
probs, labels = out.probs, out.labels
print(f"{len(sample)} photos, probs {tuple(probs.shape)}")

zero_shot = None  # your code: accuracy of the rule above
check_zero_shot(zero_shot, probs, labels)

# %% solution
# Solution
p_dog = probs[:, 151:269].sum(1)
p_cat = probs[:, 281:286].sum(1)
zero_shot = ((p_dog > p_cat).long() == labels).float().mean().item()
check_zero_shot(zero_shot, probs, labels)

# %% [markdown]
# This only works because the target classes happen to be inside the source task. For most
# targets (your own products, X-rays, defects on a production line) they are not, and a new
# output layer has to be trained. What carries over is everything *before* that layer.
#
# ## What the layers see
#
# A convolutional network is a stack of layer groups. tlkit names them the same way for
# every architecture: `stem`, `stage1` … `stage8`, `head` for this one.

# %%
# NBVAL_CHECK_OUTPUT
print(model.group_names)

# %% [markdown]
# The first layer's filters are small colour patches. After ImageNet training they have
# become edge, colour and contrast detectors (first figure: the **pretrained** weights); in
# an untrained network of the same shape they are noise (second figure: **random**
# weights). The titles say which is which. (Lite0's first layer has 32 filters of 3×3 pixels.)

# %%
viz.plot_filters(model)

# %%
viz.plot_filters(load_backbone("efficientnet_lite0", pretrained=False))

# %% [markdown]
# Feature maps show what each group *responds to* in one photo: the strongest channels
# after four groups. Early groups keep the full resolution and light up on edges and
# textures; late groups are coarse (a 7×7 grid for a 224 px input) and respond to parts
# and objects. Early features are **generic**; late ones are **specific** to the source task.

# %%
viz.plot_feature_maps(model, photos[0], groups=["stem", "stage2", "stage4", "stage8"])

# %% [markdown]
# ### Exercise 2: predict the size of the last feature map
#
# The figure above was drawn for a 224 × 224 photo. Now feed the network a **384 × 384**
# photo. What will the height (= width) of the feature map after `stage8` be? Work it out
# first, then check your answer by running the network on `torch.zeros(1, 3, 384, 384)`.
#
# Hint: compare the sizes printed in the figure with the input size. By what factor has
# the resolution shrunk by `stage8`?

# %%
from course_checks import check_spatial_size

last_size = None  # your answer: a number of pixels
check_spatial_size(last_size, image_size=384)

# %% solution
# Solution: five stride-2 steps, a total stride of 32: 384 / 32 = 12
from tlkit.explain import capture_activations

device = next(model.parameters()).device  # predict() moved the model to the GPU, if there is one
with capture_activations(model, ["stage8"]) as acts:
    model(torch.zeros(1, 3, 384, 384, device=device))
last_size = acts["stage8"].shape[-1]
print("stage8 output:", tuple(acts["stage8"].shape))
check_spatial_size(last_size, image_size=384)

# %% [markdown]
# ## Why reusing features saves data and compute
#
# To reuse the network for cats vs dogs we replace the 1000-class output layer with a
# 2-class one and *freeze* everything else. Only the new head learns.

# %%
# NBVAL_CHECK_OUTPUT
from tlkit import freeze

trainable, total = count_parameters(model)
print(f"ImageNet model: {total:,} parameters, {model.head.weight.numel() + model.head.bias.numel():,} "
      "of them in the 1000-class output layer")

model.replace_head(2, class_names=train.classes)
freeze(model, model.group_names[:-1])  # every group except the head
trainable, total = count_parameters(model)
print(f"new 2-class head, frozen body: {trainable:,} trainable of {total:,} ({trainable / total:.2%})")

# %% claim
# Claim check: guards "2,562 numbers" below and the exercise's answer; runs when the notebooks are rebuilt
from course_checks import claim

claim(trainable == 2562, "a 2-class head on a frozen body: 2,562 trainable numbers", trainable=trainable)

# %% [markdown]
# Fewer free parameters means fewer examples are needed to pin them down: 2,562 numbers
# can be fitted from a few hundred photos, millions cannot.
#
# It also saves compute. A frozen body only has to run *forward*, once per image (its
# output never changes, so it can be cached; notebook 02 does that). Training from scratch
# runs forward *and* backward through the whole network, for every image, for hundreds of
# epochs. Here are both, timed on one batch on this machine:

# %%
import time

from tlkit.data import transforms_for
from tlkit.images import open_image

preprocess = transforms_for(model)  # 224 px, the backbone's own mean and std
batch = torch.stack([preprocess(open_image(p)) for p in photos])  # (4, 3, 224, 224): small, to fit 2 GB of RAM

model = model.cpu().eval()  # both timings on the CPU
with torch.no_grad():
    model.forward_pooled(batch)  # warm-up
    start = time.perf_counter()
    model.forward_pooled(batch)
    forward_s = (time.perf_counter() - start) / len(batch)

scratch = load_backbone("efficientnet_lite0", pretrained=False, num_classes=2).train()
optimizer = torch.optim.AdamW(scratch.parameters(), lr=1e-3)
targets = torch.tensor([0, 0, 1, 1])
for step in range(2):  # the first step warms up; time the second
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(scratch(batch), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    train_s = (time.perf_counter() - start) / len(batch)

print(f"frozen feature pass: {1 / forward_s:6.1f} images/s -> 2,000 photos once: {2000 * forward_s / 60:.1f} min")
print(f"full training step:  {1 / train_s:6.1f} images/s -> ImageNet, 1.28 M photos x 350 epochs: "
      f"{1.28e6 * 350 * train_s / 86400 / 365:.0f} years on this CPU")

# %% claim
# Claim check: guards "minutes of compute" and "much cheaper" below; runs when the notebooks are rebuilt
claim(2000 * forward_s / 60 < 10 and train_s > 2 * forward_s,
      "the frozen pass over 2,000 photos takes minutes; a training step costs several times a forward pass",
      feature_pass_min=2000 * forward_s / 60, train_over_forward=train_s / forward_s)

# %% [markdown]
# That is the trade transfer learning makes: someone else paid for the source task once
# (EfficientNet's recipe trains for 350 epochs on ImageNet, on many accelerators), and every
# new target task reuses it for minutes of compute and a few thousand labelled photos.
#
# ### Exercise 3: a bigger unfreeze, by hand
#
# Suppose you unfreeze `stage8` as well, and the task has **three** classes (cats, dogs,
# foxes). How many parameters would train? Compute it, then verify it on a fresh model.
#
# Hint: `model.groups["stage8"]` is an `nn.Module`: its parameters can be counted. The new
# head has one weight per feature and class, and one bias per class.

# %%
from course_checks import check_trainable_after

n_trainable = None  # your answer
check_trainable_after(n_trainable, ["stage8", "head"], num_classes=3)

# %% solution
# Solution
fresh = load_backbone("efficientnet_lite0", pretrained=False)
fresh.replace_head(3)
freeze(fresh, fresh.group_names[:-2])  # everything except stage8 and the head
n_trainable = count_parameters(fresh)[0]
print(f"{n_trainable:,}")
check_trainable_after(n_trainable, ["stage8", "head"], num_classes=3)

# %% [markdown]
# ## The wider family
#
# What you saw is *inductive* transfer learning for images: a different task in the target,
# with labels. The usual names for the other kinds (in the sense of Pan and Yang's survey,
# *A Survey on Transfer Learning*, 2010) depend on where the labels are and on what differs:
#
# | Kind | Labels | What differs between source and target | Example |
# |------|--------|----------------------------------------|---------|
# | Inductive | in the target (the source may have them or not) | the task | ImageNet classes → cats vs dogs (this course) |
# | Transductive | in the source only | not the task, but the data: the domain (its inputs or their distribution) | sentiment of labelled English reviews → sentiment of unlabelled German reviews (other words: another feature space) |
# | Domain adaptation | in the source only | a kind of transductive transfer: same task *and* same kind of input, only their distribution differs | digit labels from MNIST photos → unlabelled digits in street-view photos (SVHN): same 10 digits, same pixels, other look |
# | Unsupervised | none, in source or target | the task, which is itself unsupervised (clustering, dimensionality reduction) | features learned without labels → clustering a new, unlabelled photo collection |
#
# - **Text:** BERT and GPT are pretrained on large text corpora and fine-tuned for a target
#   such as sentiment analysis, exactly like the head-then-unfreeze recipe of notebook 03.
# - **Speech:** wav2vec 2.0 is pretrained on unlabelled audio and fine-tuned for speech
#   recognition with a few hours of transcribed speech.
# - **Where pretrained models come from:** torchvision, timm and PyTorch Hub (PyTorch),
#   Hugging Face Hub (all modalities), TensorFlow Hub and Keras Applications (TensorFlow).
# - **Edge devices:** small backbones (MobileNet, EfficientNet-Lite: this one was designed for
#   phones) or *distillation*, where a small student network is trained to copy a large one.
#
# **Next:** notebook 02 turns this model into a dog-vs-cat classifier, step by step.
