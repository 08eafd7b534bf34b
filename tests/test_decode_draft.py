"""Reduced-scale JPEG decoding (PIL draft) for evaluation transforms: when it applies, what it keeps, the cache key."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import tlkit.boundary.cache as boundary_cache
import tlkit.feature_cache as feature_cache
from tlkit.data import ImageDataset, transforms_for
from tlkit.feature_cache import cache_key
from tlkit.images import draft_scale, draft_side, open_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _jpeg(path: Path, size: tuple[int, int], fmt: str = "JPEG") -> Path:
    """A smooth gradient photo stand-in of ``size`` (so a 1/2-scale decode is close to the full one)."""
    w, h = size
    x = torch.linspace(0, 255, w).view(1, w).expand(h, w)
    y = torch.linspace(0, 255, h).view(h, 1).expand(h, w)
    rgb = torch.stack([x, y, (x + y) / 2], dim=-1).round().to(torch.uint8).numpy()
    Image.fromarray(rgb).save(path, fmt)
    return path


def test_draft_scale_keeps_twice_the_target_on_both_sides():
    assert draft_scale((4032, 3024), 256) == 4  # 1008x756
    assert draft_scale((8000, 6000), 256) == 8  # 1000x750
    assert draft_scale((1100, 2400), 256) == 2  # the shorter side decides: 550x1200
    assert draft_scale((1023, 4000), 256) == 1  # below 4x: full size
    assert draft_scale((512, 512), 256) == 1  # 2x is not enough: the resize would lose its headroom
    for size in [(4032, 3024), (1100, 2400), (3000, 1030), (9000, 9000)]:
        assert min(size) // draft_scale(size, 256) >= 2 * 256


def test_open_image_drafts_only_jpegs_at_least_four_times_the_target(tmp_path):
    big = _jpeg(tmp_path / "big.jpg", (2400, 1600))
    small = _jpeg(tmp_path / "small.jpg", (1000, 1000))  # < 4 x 256 on the short side
    png = _jpeg(tmp_path / "big.png", (2400, 1600), "PNG")
    assert open_image(big, min_side=256).size == (1200, 800)  # 1/2: 1/4 would leave 400 < 2 x 256
    assert open_image(big, min_side=150).size == (600, 400)  # 1/4: 1/8 would leave 200 < 2 x 150
    assert open_image(big, min_side=100).size == (300, 200)  # 1/8: 200 = 2 x 100
    assert open_image(big).size == (2400, 1600)  # no target: every pixel
    assert open_image(small, min_side=256).size == (1000, 1000)
    assert open_image(png, min_side=256).size == (2400, 1600)  # only JPEG decoders can skip detail


def test_draft_side_reads_the_evaluation_resize_and_skips_random_crops(resnet18_2):
    assert draft_side(transforms_for(resnet18_2, train=False)) == 256  # 224 px: resize to 256, centre crop
    assert draft_side(transforms_for(resnet18_2, train=False, image_size=160)) == 183
    assert draft_side(transforms_for(resnet18_2, train=True)) is None
    assert draft_side(None) is None
    assert draft_side(lambda im: im) is None


def test_dataset_output_is_unchanged_in_size_and_close_in_pixels(tmp_path, resnet18_2):
    files = [str(_jpeg(tmp_path / f"{i}.jpg", size)) for i, size in enumerate([(2400, 1600), (4032, 3024), (900, 700)])]
    tf = transforms_for(resnet18_2, train=False)
    ds = ImageDataset(files, [0, 1, 0], ["a", "b"], tf)
    for i, f in enumerate(files):
        drafted, _ = ds[i]
        full = tf(open_image(f))
        assert drafted.shape == full.shape == (3, 224, 224)
        assert float((drafted - full).abs().mean()) < 0.02  # normalised units; a different image differs by ~1
    assert torch.equal(ds[2][0], tf(open_image(files[2])))  # below 4x: the very same pixels


def _real_photos(tmp_path: Path) -> list[Path]:
    """matplotlib's sample portrait and scikit-learn's photos, each followed by its copy at a phone's 4032x3024."""
    from imagegen import library_photos, phone_sized

    photos = library_photos()
    if not photos:
        pytest.skip("no sample photo found (matplotlib's grace_hopper.jpg)")
    return [p for pair in zip(photos, phone_sized(photos, tmp_path)) for p in pair]


def test_pretrained_features_with_draft_stay_close_on_real_photos(tmp_path):
    from tlkit.backbones import load_backbone

    try:
        model = load_backbone("efficientnet_lite0", num_classes=2).eval()
    except Exception as exc:  # noqa: BLE001 - offline without the weights
        pytest.skip(f"setup incomplete: pretrained Lite0 weights not available ({exc})")
    photos = _real_photos(tmp_path)
    tf = transforms_for(model, train=False, image_size=224)  # resize 256: the phone-sized copies are >= 4x
    ds = ImageDataset([str(p) for p in photos], [0] * len(photos), ["a", "b"], tf)
    assert sum(draft_scale(Image.open(p).size, 256) > 1 for p in photos) >= len(photos) // 2
    with torch.no_grad():
        drafted = model.forward_pooled(torch.stack([ds[i][0] for i in range(len(ds))]))
        full = model.forward_pooled(torch.stack([tf(open_image(p)) for p in photos]))
    cos = torch.nn.functional.cosine_similarity(drafted, full, dim=1)
    assert float(cos.min()) > 0.99, cos
    between = torch.nn.functional.cosine_similarity(full[0:1], full[2:3], dim=1) if len(full) > 2 else None
    if between is not None:  # two different photos are much further apart than a photo and its drafted self
        assert float(between) < float(cos.min()) - 0.05


def test_the_decoder_version_is_part_of_the_cache_keys(monkeypatch, tiny_datasets, resnet18_2):
    train = tiny_datasets[0].with_transform(transforms_for(resnet18_2, image_size=64))
    key = cache_key(resnet18_2, train)
    monkeypatch.setattr(feature_cache, "DECODE_VERSION", 1)  # the decoder before draft
    assert cache_key(resnet18_2, train) != key
    act = boundary_cache.activation_key(resnet18_2, train, "stage4")
    monkeypatch.setattr(boundary_cache, "DECODE_VERSION", 1)
    assert boundary_cache.activation_key(resnet18_2, train, "stage4") != act


def test_feature_pass_reports_where_the_time_goes(monkeypatch, tiny_datasets, resnet18_2):
    import time

    import tlkit.data as data_mod
    from tlkit.features import extract_features

    real = data_mod.open_image

    def slow(path, min_side=None):  # a decoder that takes 20 ms an image
        time.sleep(0.02)
        return real(path, min_side=min_side)

    monkeypatch.setattr(data_mod, "open_image", slow)
    val = tiny_datasets[1].with_transform(transforms_for(resnet18_2, image_size=64))
    f = extract_features(resnet18_2, val, cache=False, engine="torch", num_workers=0, progress=False)
    assert f.load_seconds >= 24 * 0.02  # every decode happens while the loop waits for a batch
    assert f.forward_seconds > 0
    assert f.load_seconds + f.forward_seconds == pytest.approx(f.seconds, abs=0.25)


def test_prefetched_keeps_the_order_and_decodes_during_the_callers_work():
    import threading
    import time

    from tlkit.loaders import prefetched

    def slow_batches():
        for i in range(8):
            time.sleep(0.05)  # "decoding"
            yield i

    timing: dict = {}
    start, got, threads = time.perf_counter(), [], set()
    for item in prefetched(slow_batches(), timing=timing):
        got.append(item)
        threads.add(threading.current_thread().name)
        time.sleep(0.05)  # "the forward pass"
    wall = time.perf_counter() - start
    assert got == list(range(8)) and threads == {threading.current_thread().name}
    assert timing["decode_seconds"] >= 8 * 0.05
    assert wall < 0.7  # one after the other would take 0.8 s; overlapped, about 0.45 s


def test_prefetched_decodes_with_one_torch_thread_and_puts_the_setting_back():
    import threading

    from tlkit.loaders import prefetched

    before = torch.get_num_threads()  # this module runs with one thread (one_torch_thread)
    torch.set_num_threads(3)
    try:
        def batches():
            for _ in range(3):
                yield torch.get_num_threads()  # read in the producer thread

        assert list(prefetched(batches())) == [1, 1, 1]
        assert torch.get_num_threads() == 3  # the caller's thread never changed
        seen = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert seen == [3]  # a thread started afterwards gets the caller's count again
    finally:
        torch.set_num_threads(before)


def test_prefetched_raises_the_producers_error_and_stops_when_the_caller_stops():
    import threading
    import time

    from tlkit.loaders import prefetched

    def broken():
        yield 0
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetched(broken()):
            got.append(item)
    assert got == [0, 1]  # the batches before the error arrive first

    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    for item in prefetched(endless(), depth=2):
        if item == 3:
            break
    time.sleep(0.3)
    assert not any(t.name == "tlkit-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(made) <= 4 + 2 + 1  # stopped a batch or so after the caller, not endless


def test_the_onnx_runtime_pass_decodes_in_a_thread_and_pytorchs_does_not(monkeypatch, tiny_datasets, tmp_path):
    pytest.importorskip("onnxruntime")
    from modelgen import noise_stat_resnet

    import tlkit.inference as inference_mod
    from tlkit.features import extract_features

    monkeypatch.delenv("TLKIT_ENGINE", raising=False)  # conftest's "torch" would override the argument
    resnet18_2 = noise_stat_resnet(0)

    calls = []
    real = inference_mod.prefetched
    monkeypatch.setattr(inference_mod, "prefetched", lambda b, **kw: calls.append(1) or real(b, **kw))
    val = tiny_datasets[1].with_transform(transforms_for(resnet18_2, image_size=64))
    f = extract_features(resnet18_2, val, cache=False, engine="torch", num_workers=0, progress=False,
                         precision="fp32")
    assert calls == [] and f.decode_seconds > 0
    g = extract_features(resnet18_2, val, cache=False, cache_dir=tmp_path, engine="onnxruntime", num_workers=0,
                         progress=False)
    assert calls == [1] and g.engine == "onnxruntime" and g.decode_seconds > 0 and len(g) == len(f) == 24
    assert torch.allclose(g.features, f.features, atol=1e-3, rtol=1e-3)  # same rows, same order


def test_run_inference_names_the_engines_it_knows(tiny_datasets, resnet18_2):
    from tlkit.inference import run_inference

    val = tiny_datasets[1].with_transform(transforms_for(resnet18_2, image_size=64))
    with pytest.raises(ValueError, match="engine must be 'torch' or 'onnxruntime', got 'ort'"):
        run_inference(resnet18_2, val, resnet18_2.forward_pooled, 512, 8, torch.device("cpu"), engine="ort")
