"""Helpers for the real-browser tests: a throwaway Jupyter server and test notebooks.

The server is JupyterLab 4 (``jupyter lab``) or Notebook 7 (``jupyter notebook``);
both are JupyterLab front ends and render ipywidgets 8 with the same widget manager.

What makes this reliable (see docs/DESIGN.md, "Testing in a real browser here"):

* The server listens on 127.0.0.1 with an empty token and a temporary root,
  settings and workspaces folder, so nothing from the user's setup leaks in.
* Every notebook carries ``metadata.kernelspec``, naming a kernel spec written
  here whose ``argv`` is this interpreter; otherwise JupyterLab opens a
  "Select Kernel" dialog that blocks the page, or picks another Python.
* We poll the server's HTTP API until it answers instead of sleeping.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Each front end: the command, its settings class, and the URL path that opens a notebook.
APPS = {"lab": ("lab", "LabApp", "lab/tree/"), "notebook": ("notebook", "JupyterNotebookApp", "notebooks/")}
KERNEL_NAME = "tlkit-test"
KERNEL_DISPLAY_NAME = "Python 3 (tlkit tests)"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_kernelspec(jupyter_path: Path) -> str:
    """A kernel spec that runs ipykernel in *this* interpreter (the project's .venv)."""
    folder = jupyter_path / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": KERNEL_DISPLAY_NAME, "language": "python",
            "env": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}}
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
    return KERNEL_NAME


def write_notebook(path: Path, cells: list[str]) -> Path:
    """An nbformat-4 notebook of code cells, with the kernelspec set (no kernel dialog)."""
    nb = {"nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": KERNEL_NAME, "display_name": KERNEL_DISPLAY_NAME,
                                      "language": "python"},
                       "language_info": {"name": "python"}},
          "cells": [{"cell_type": "code", "id": f"cell{i}", "metadata": {}, "execution_count": None,
                     "outputs": [], "source": src} for i, src in enumerate(cells)]}
    path.write_text(json.dumps(nb, indent=1))
    return path


def _quiet_settings(settings_dir: Path) -> None:
    """No "Jupyter news" toast and no update check (they would cover the screenshot)."""
    folder = settings_dir / "@jupyterlab" / "apputils-extension"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"The Jupyter server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "api/status", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"The Jupyter server did not answer at {url} within {timeout:.0f} s:\n"
                       f"{log.read_text()[-3000:]}")


def jupyter_env(root: Path) -> dict[str, str]:
    """The environment of the server for ``root``: its own config, runtime and data folders
    (the data folder holds the notebook-trust database), nothing from the user's."""
    home = root.parent / (root.name + "-jupyter")
    return dict(os.environ, JUPYTER_PATH=str(home / "share"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
                JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                JUPYTER_PLATFORM_DIRS="1")


def trust_notebook(path: Path, root: Path) -> None:
    """``jupyter trust`` for the server of ``root``: its front end then draws saved widgets."""
    subprocess.run([sys.executable, "-m", "jupyter", "trust", str(path)], env=jupyter_env(root), check=True,
                   capture_output=True, timeout=60)


@contextmanager
def jupyter_server(root: Path, app: str = "lab", timeout: float = 90) -> Iterator[str]:
    """Runs ``jupyter lab`` or ``jupyter notebook`` (``app``, a key of APPS) on a free local
    port with ``root`` as its folder; yields the URL that opens a notebook (append its name)."""
    command, settings_class, notebook_path = APPS[app]
    root.mkdir(parents=True, exist_ok=True)
    home = root.parent / (root.name + "-jupyter")
    jpath, settings = home / "share", home / "settings"
    write_kernelspec(jpath)
    _quiet_settings(settings)
    port = free_port()
    env = jupyter_env(root)
    cmd = [sys.executable, "-m", "jupyter", command, "--no-browser", "--allow-root", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.token=", "--ServerApp.password=",
           f"--ServerApp.root_dir={root}", f"--{settings_class}.user_settings_dir={settings}",
           f"--{settings_class}.workspaces_dir={home / 'workspaces'}"]
    if app == "lab":
        cmd.append("--LabApp.news_url=None")
    log = home / "server.log"
    home.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc, log, timeout)
        yield url + notebook_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
