"""DDP under torchrun: 2 CPU processes (gloo on 127.0.0.1), started as a user starts them.

Each test launches ``python -m torch.distributed.run --nproc_per_node=2 ...`` in a
subprocess. The CLI tests run ``-m tlkit train``; the others run this file as a
script (see ``drive_fit`` and ``drive_features`` at the bottom), which calls
the library and saves what each rank ended with, for the test to compare.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # imagegen, also when run by torchrun
from imagegen import COLOURS, make_dataset, write_image  # noqa: E402

from tlkit import distributed  # noqa: E402
from tlkit.backbones import load_backbone  # noqa: E402
from tlkit.data import ImageDataset, image_folder, transforms_for  # noqa: E402
from tlkit.evaluate import predict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


def torchrun(*args, cache: Path) -> subprocess.CompletedProcess:
    """2 processes on this machine, CPU only, one thread each; feature caches go to ``cache``."""
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "TLKIT_NUM_WORKERS": "0", "TLKIT_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def evaluate_cli(model: Path, split: Path) -> dict:
    """``python -m tlkit evaluate`` in one plain process."""
    res = subprocess.run([sys.executable, "-m", "tlkit", "evaluate", str(model), str(split), "--json", "--quiet"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def odd_split_data(root: Path) -> Path:
    """Learnable train/; val/ of 17 images (9 + 8 per rank), 3 of them in the wrong class folder."""
    make_dataset(root, train=12, val=7, size=64)
    write_image(root / "val" / "cats" / "odd.0.jpg", COLOURS["dogs"], 64, seed=90)
    for i in (1, 2):
        write_image(root / "val" / "dogs" / f"odd.{i}.jpg", COLOURS["cats"], 64, seed=90 + i)
    return root


def test_outside_torchrun_everything_is_one_process(monkeypatch):
    for var in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    with distributed.session() as ctx:
        assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
        assert not torch.distributed.is_initialized()
        assert ctx.all_sum(1.5, 3) == [1.5, 3] and ctx.every_rank_has(2) and not ctx.every_rank_has(0)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, ctx, torch.device("cpu")) is model
    assert distributed.sampler_for(range(5), ctx, shuffle=True) is None


def test_positions_follow_the_shard_order_with_duplicates():
    assert distributed._positions(["a", "c", "a"], ["a", "b", "c", "a"]) == [0, 2, 3]


def test_cli_finetune_on_two_processes(tmp_path):
    data = odd_split_data(tmp_path / "data")
    out = tmp_path / "run"
    res = torchrun("-m", "tlkit", "train", data, "--out", out, "--strategy", "finetune", "--epochs", "2",
                   "--unfreeze-at", "2", "--image-size", "64", "--batch-size", "8", "--lr", "3e-4",
                   cache=tmp_path / "cache")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("validation accuracy") == 1  # rank 0 alone reports
    assert sorted(p.name for p in out.iterdir()) == [".tlkit-output", "confusion_matrix.png", "metrics.json", "model.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["num_val"] == 17 and len(metrics["history"]) == 2
    single = evaluate_cli(out / "model.pt", data / "val")
    assert single["n"] == 17
    # The trainer's val_acc sums correct/seen over both ranks' shards; the model holds the best epoch.
    best = max(row["val_acc"] for row in metrics["history"])
    assert single["accuracy"] == pytest.approx(best, abs=1e-6)  # evaluate counts in float32
    assert single["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-4)
    assert 0.5 < single["accuracy"] < 1.0  # the 3 misfiled images make the check non-trivial


def test_cli_features_on_two_processes(tmp_path):
    data = odd_split_data(tmp_path / "data")
    out, cache = tmp_path / "run", tmp_path / "cache"
    res = torchrun("-m", "tlkit", "train", data, "--out", out, "--strategy", "features", "--epochs", "15",
                   "--image-size", "64", "--lr", "3e-3", "--quiet", cache=cache)
    assert res.returncode == 0, res.stdout + res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["strategy"] == "features"
    assert len(list((cache / "features").glob("*.pt"))) == 2  # train and val; no leftover temp files
    assert not list((cache / "features").glob("*tmp*"))
    single = evaluate_cli(out / "model.pt", data / "val")
    assert single["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-4)
    assert single["accuracy"] == pytest.approx(max(row["val_acc"] for row in metrics["history"]), abs=1e-6)


def test_fit_keeps_ranks_identical_and_reduces_metrics_exactly(tmp_path):
    make_dataset(tmp_path / "data", train=10, val=6, size=40)
    write_image(tmp_path / "data" / "val" / "cats" / "extra.jpg", COLOURS["cats"], 40, seed=99)  # 13: odd
    out = tmp_path / "out"
    res = torchrun(__file__, "fit", tmp_path / "data", out, cache=tmp_path / "cache")
    assert res.returncode == 0, res.stdout + res.stderr
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # weights and BN running statistics
    # Not trivially equal: the ranks began from different weights and trained on different images ...
    inits = [r["init"] for r in ranks]
    assert not all(torch.equal(inits[0][k], inits[1][k]) for k in a)
    for seen0, seen1 in zip(ranks[0]["train_seen"], ranks[1]["train_seen"]):  # per epoch: 10 + 10 images
        assert sorted(seen0 + seen1) == list(range(20))
    assert ranks[0]["train_seen"][0] != ranks[0]["train_seen"][1]  # set_epoch: a new share every epoch
    val_seen = [r["val_seen"] for r in ranks]  # an unpadded split: 7 + 6 images
    assert sorted(val_seen[0] + val_seen[1]) == list(range(13)) and len(val_seen[0]) == 7
    # ... and the group unfrozen at epoch 2 (DDP wrapped again) trained in step on both ranks.
    ends = [r["epoch_end"] for r in ranks]  # weights after each epoch (the model then ends with the best)
    for e in range(3):
        assert all(torch.equal(ends[0][e][k], ends[1][e][k]) for k in a)
    stage4 = [k for k in a if k.startswith("groups.stage4.") and k.endswith("weight")]
    assert all(torch.equal(inits[0][k], ends[0][0][k]) for k in stage4)  # frozen in epoch 1; rank 0's start
    assert not any(torch.equal(ends[0][0][k], ends[0][1][k]) for k in stage4)  # trains from epoch 2 on
    rows = [[{k: row[k] for k in METRICS} for row in r["history"]] for r in ranks]
    assert rows[0] == rows[1] and len(rows[0]) == 3
    assert (out / "ckpt0" / "last.pt").is_file() and not (out / "ckpt1").exists()  # rank 0 alone writes
    # init_from_env() joined the group and kept it for the next fit, which failed on both ranks alike;
    # the group still worked after that (the process exit then destroys it: exit status 0 above).
    assert all(r["group_after_fit"] and r["error"] == "boom" and r["sum_after_error"] == 1 for r in ranks)
    # The reduced validation numbers equal one process evaluating the whole val/ with the saved weights.
    model = _tiny_model(seed=0)
    model.load_state_dict(a)
    _, val = image_folder(tmp_path / "data")
    preds = predict(model, val.with_transform(transforms_for(model, image_size=32)))
    best = max(ranks[0]["history"], key=lambda row: row["val_acc"])
    assert preds.accuracy == pytest.approx(best["val_acc"], abs=1e-6)  # float32 in predict
    loss = torch.nn.functional.nll_loss(preds.probs.log(), preds.labels).item()
    assert loss == pytest.approx(best["val_loss"], abs=1e-5)


def test_features_are_gathered_in_file_order_and_cached_once(tmp_path):
    make_dataset(tmp_path / "data", train=7, val=2, size=40)
    out = tmp_path / "out"
    res = torchrun(__file__, "features", tmp_path / "data", out, cache=tmp_path / "cache")
    assert res.returncode == 0, res.stdout + res.stderr
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    model = _tiny_model(seed=0)
    ref = _extract_in_one_process(model, _dataset_with_broken_file(tmp_path / "data", model))
    for r in ranks:
        first, second = r["first"], r["second"]
        assert first["files"] == ref.files and len(ref.files) == 14  # the empty file is skipped everywhere
        assert torch.equal(first["labels"], ref.labels)
        assert torch.allclose(first["features"], ref.features, atol=1e-5, rtol=0)
        assert not first["from_cache"] and second["from_cache"]
        assert torch.equal(second["features"], first["features"]) and second["files"] == first["files"]
    assert ranks[0]["saves"] == 1 and ranks[1]["saves"] == 0  # rank 0 wrote the cache, once
    assert not ranks[0]["group_after_error"] and not ranks[1]["group_after_error"]  # session() tore it down
    assert len(list((out / "cache").glob("*.pt"))) == 1


# ---------------------------------------------------------------------- helpers and drivers
def _tiny_model(seed: int):
    torch.manual_seed(seed)
    return load_backbone("mobilenet_v3_small", pretrained=False, num_classes=2)


def _dataset_with_broken_file(data: Path, model) -> ImageDataset:
    """train/ with an empty file in the middle: every process must skip the same one."""
    train, _ = image_folder(data)
    broken = data / "broken.jpg"
    broken.write_bytes(b"")
    files, targets = train.files[:5] + [str(broken)] + train.files[5:], train.targets[:5] + [0] + train.targets[5:]
    return ImageDataset(files, targets, train.classes, transforms_for(model, image_size=32), "train")


def _extract_in_one_process(model, dataset):
    from tlkit.features import extract_features
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        return extract_features(model, dataset, batch_size=4, cache=False, progress=False)


class _Recording(ImageDataset):
    """Remembers which indices this process loaded (the sampler's share)."""

    def __init__(self, ds: ImageDataset):
        super().__init__(ds.files, ds.targets, ds.classes, ds.transform, ds.name)
        self.seen: list[int] = []

    def __getitem__(self, i: int):
        self.seen.append(int(i))
        return super().__getitem__(i)


def drive_fit(data: Path, out: Path) -> None:
    """Under torchrun: fit() on each rank, then save what each rank ended with."""
    from tlkit.callbacks import Callback, GradualUnfreezing
    from tlkit.freezing import freeze_to, set_bn_policy
    from tlkit.train import fit

    rank = int(os.environ["RANK"])
    model = _tiny_model(seed=rank)  # different weights per rank: DDP must start all from rank 0's
    init = {k: v.clone() for k, v in model.state_dict().items()}
    freeze_to(model, -2)  # stage5 + head train; stage4 joins at epoch 2
    set_bn_policy(model, "eval")  # BN of trainable groups updates its statistics on each rank's batches
    train, val = image_folder(data)
    train = _Recording(train.with_transform(transforms_for(model, train=True, image_size=32)))
    val = _Recording(val.with_transform(transforms_for(model, image_size=32)))
    train_seen: list[list[int]] = []
    epoch_end: list[dict] = []

    class Shares(Callback):  # the training images this rank loaded, epoch by epoch
        def on_epoch_end(self, state, epoch, row):
            train_seen.append(sorted(train.seen))
            train.seen.clear()
            epoch_end.append({k: v.clone() for k, v in state.model.state_dict().items()})

    distributed.init_from_env()  # fit never starts a process group: a script under torchrun opts in
    history = fit(model, train, val, epochs=3, lr=3e-3, batch_size=4, seed=0, progress=False,
                  scheduler="cosine", callbacks=[GradualUnfreezing({2: ["stage4"]}, lr=1e-3), Shares()],
                  checkpoint_dir=out / f"ckpt{rank}")
    after_fit = torch.distributed.is_initialized()

    class Boom(Callback):
        def on_epoch_end(self, state, epoch, row):
            raise RuntimeError("boom")

    try:
        fit(_tiny_model(seed=0), train, None, epochs=1, batch_size=4, progress=False, callbacks=[Boom()])
        error = None
    except RuntimeError as exc:
        error = str(exc)
    total = distributed.context().all_sum(rank)[0]  # 0 + 1
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "init": init, "history": history.rows, "error": error,
                "train_seen": train_seen, "epoch_end": epoch_end, "val_seen": sorted(set(val.seen)),
                "group_after_fit": after_fit, "sum_after_error": total}, out / f"rank{rank}.pt")


def drive_features(data: Path, out: Path) -> None:
    """Under torchrun: extract_features twice (the second from the cache) on every rank."""
    import warnings

    from tlkit import features

    rank, saves = int(os.environ["RANK"]), []
    real_save = features.save_cache
    features.save_cache = lambda *a: (saves.append(1), real_save(*a))  # count writes on this rank
    model = _tiny_model(seed=0)
    dataset = _dataset_with_broken_file(data, model) if rank == 0 else None
    try:
        with distributed.session() as ctx:
            dataset = ctx.broadcast_object(dataset)  # rank 0 wrote the broken file; then all read it
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runs = [features.extract_features(model, dataset, batch_size=4, cache_dir=out / "cache",
                                                  progress=False) for _ in range(2)]
            raise KeyError("an error inside the session")
    except KeyError:
        pass
    result = {name: {"features": f.features, "labels": f.labels, "files": f.files, "from_cache": f.from_cache}
              for name, f in zip(("first", "second"), runs)}
    torch.save({"saves": len(saves), "group_after_error": torch.distributed.is_initialized(), **result},
               out / f"rank{rank}.pt")


if __name__ == "__main__":  # python -m torch.distributed.run ... tests/test_distributed.py fit|features DATA OUT
    {"fit": drive_fit, "features": drive_features}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
