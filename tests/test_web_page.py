"""The static page of ``python -m tlkit export MODEL.pt --web DIR``, in a real browser.

A small real model (Lite0's ImageNet body at 96 px with a head fitted on 40
training photos) is saved, exported with ``--web``, and the page is served from
a local HTTP server. Chromium (Playwright) gives it a cat and a dog photo from
the shared validation set: the shown label must be right, and the class
probabilities must equal PyTorch's within the export's parity tolerance. Every
request the page makes must go to the local server.

The preprocessing (``preprocess.js``) is also checked on its own under node
against torchvision's eval transform, pixel for pixel, on real photos.

Needs the onnxruntime-web npm package (``npm ci``; ``make test`` runs it),
/usr/bin/chromium and playwright (see tests/test_browser_widgets.py), and the
real photos; skips with the reason otherwise.
"""
from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from browser.jupyter_lab import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from test_browser_widgets import SKIP_NO_CHROMIUM, _artifacts_dir  # noqa: E402
from test_cli import tlkit  # noqa: E402
from tlkit.data import eval_resize, transforms_for  # noqa: E402
from tlkit.export.onnx_file import PARITY_ATOL  # noqa: E402
from tlkit.export.web import PAGE_DIR, PAGE_FILES, find_ort_web  # noqa: E402
from tlkit.images import open_image  # noqa: E402

SIZE = 96
PHOTOS = {"cats": "cat.4010.jpg", "dogs": "dog.4002.jpg"}  # right, at about 80%: probabilities far from 0 and 1
SKIP_NO_NPM = "setup incomplete: onnxruntime-web is not installed: run `npm ci` in the repository root"


def _ort_installed() -> bool:
    try:
        find_ort_web()
        return True
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------
# Without a browser


def test_page_files_reference_no_internet_url():
    for name in PAGE_FILES:
        text = (PAGE_DIR / name).read_text()
        assert not re.search(r"https?://", text), f"{name} references the internet"
        assert "//cdn" not in text and "src=\"//" not in text


def test_missing_onnxruntime_web_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TLKIT_ORT_WEB_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="npm ci"):
        find_ort_web(tmp_path / "nowhere")
    monkeypatch.setenv("TLKIT_ORT_WEB_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"--ort-web-dir .*TLKIT_ORT_WEB_DIR"):
        find_ort_web()


def test_export_web_without_onnxruntime_web_stops_before_exporting(tmp_path):
    from tlkit.backbones import load_backbone
    from tlkit.checkpoint import save_model

    torch.manual_seed(0)
    save_model(load_backbone("resnet18", pretrained=False, num_classes=2, class_names=["cats", "dogs"]),
               tmp_path / "model.pt", image_size=32)
    res = tlkit("export", tmp_path / "model.pt", "--web", tmp_path / "site", "--ort-web-dir", tmp_path / "none",
                "--quiet")
    assert res.returncode == 2 and res.stderr.startswith("error: ONNX Runtime Web's files"), res.stderr
    assert "npm ci" in res.stderr and "make web-deps" in res.stderr
    assert not (tmp_path / "model.onnx").exists() and not (tmp_path / "site").exists()


@pytest.mark.skipif(shutil.which("node") is None, reason="setup incomplete: node is not installed")
def test_preprocess_js_matches_the_eval_transform_pixel_for_pixel(cats_dogs_dir, tmp_path):
    """preprocess.js (Pillow's bilinear resize, centre crop, mean/std) against torchvision, under node."""
    import numpy as np

    val = cats_dogs_dir / "validation"
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    photos = [val / "cats" / "cat.4001.jpg", val / "dogs" / "dog.4003.jpg"]  # landscape and portrait
    script = tmp_path / "run.mjs"
    for path in photos:
        im = open_image(path)
        rgb = np.asarray(im)
        (tmp_path / "rgb.raw").write_bytes(rgb.tobytes())
        for size in (224, 97):
            model = type("M", (), {"input_size": size, "mean": mean, "std": std})()
            ref = transforms_for(model)(im).numpy()
            meta = {"image_size": size, "resize_to": eval_resize(size), "mean": mean, "std": std}
            script.write_text(
                f"import {{ preprocess }} from {json.dumps((PAGE_DIR / 'preprocess.js').as_uri())};\n"
                "import fs from 'fs';\n"
                f"const rgb = new Uint8Array(fs.readFileSync({json.dumps(str(tmp_path / 'rgb.raw'))}));\n"
                f"const out = preprocess(rgb, {rgb.shape[0]}, {rgb.shape[1]}, {json.dumps(meta)});\n"
                f"fs.writeFileSync({json.dumps(str(tmp_path / 'out.raw'))}, Buffer.from(out.buffer));\n")
            subprocess.run(["node", str(script)], check=True, capture_output=True, timeout=60)
            out = np.frombuffer((tmp_path / "out.raw").read_bytes(), dtype=np.float32).reshape(ref.shape)
            assert np.abs(out - ref).max() < 1e-6, (path.name, size)  # same bytes; float rounding only


# --------------------------------------------------------------------------
# In the browser


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cats_dogs_dir):
    """Lite0 (ImageNet body) at 96 px with a 2-class head fitted on 20 + 20 training photos, saved."""
    from tlkit.backbones import load_backbone
    from tlkit.checkpoint import save_model

    torch.manual_seed(0)
    model = load_backbone("efficientnet_lite0", num_classes=2, class_names=["cats", "dogs"])
    model.input_size = SIZE
    tf = transforms_for(model)
    train = cats_dogs_dir / "train"
    files = [(p, y) for y, c in enumerate(("cats", "dogs")) for p in sorted((train / c).glob("*.jpg"))[:20]]
    with torch.no_grad():
        x = model.forward_pooled(torch.stack([tf(open_image(f)) for f, _ in files]))
    y = torch.tensor([label for _, label in files])
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model.head(x), y).backward()
        opt.step()
    tmp = tmp_path_factory.mktemp("web")
    save_model(model.eval(), tmp / "model.pt", image_size=SIZE)
    return tmp, model


def _serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=SKIP_NO_CHROMIUM)
@pytest.mark.skipif(not _ort_installed(), reason=SKIP_NO_NPM)
def test_web_page_classifies_a_cat_and_a_dog_like_pytorch(trained, cats_dogs_dir, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="setup incomplete: pip install -e '.[dev]' (it brings playwright)")
    tmp, model = trained
    web = tmp / "site"
    res = tlkit("export", tmp / "model.pt", "--web", web, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "wrote the web page" in res.stdout and "python -m http.server -d" in res.stdout
    assert sorted(p.name for p in web.iterdir()) == sorted(["app.js", "index.html", "model.json", "model.onnx",
                                                            "ort", "preprocess.js"])
    assert json.loads((web / "model.json").read_text())["class_names"] == ["cats", "dogs"]
    server, url = _serve(web)
    requests: list[str] = []
    shots = _artifacts_dir(tmp_path)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url + "/index.html")
            page.wait_for_selector("body[data-ready='true']", timeout=60_000)
            for truth, name in PHOTOS.items():
                photo = cats_dogs_dir / "validation" / truth / name
                page.set_input_files("#file", str(photo))
                page.wait_for_selector("body[data-result]", timeout=60_000)
                shown = json.loads(page.get_attribute("body", "data-result"))
                assert "error" not in shown, shown
                with torch.no_grad():
                    expected = model(transforms_for(model)(open_image(photo)).unsqueeze(0)).softmax(1)[0]
                assert expected.argmax().item() == ["cats", "dogs"].index(truth)  # the model is right here
                assert shown["label"] == truth
                assert page.inner_text("#label").startswith(truth)
                diff = (torch.tensor(shown["probabilities"]) - expected).abs().max().item()
                assert diff <= PARITY_ATOL, (name, diff)
                print(f"{name}: page {shown['probabilities']}, max |p_page - p_torch| {diff:.1e}")
                page.screenshot(path=str(shots / f"web_page_{truth}.png"))
            browser.close()
    finally:
        server.shutdown()
    local = [u for u in requests if not u.startswith((url + "/", "blob:", "data:"))]
    assert not local, f"the page fetched from elsewhere: {local}"
    assert {u[len(url):] for u in requests} >= {"/index.html", "/app.js", "/model.onnx", "/model.json",
                                                 "/ort/ort-wasm-simd-threaded.wasm"}
