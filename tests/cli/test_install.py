"""The built sdist and wheel, installed into a fresh virtual environment, run `wasmhost demo` from an
empty folder: what a new user does after ``pip install wasmhost``.

``python -m build`` builds the sdist, then the wheel from that sdist (as CI and PyPI uploads do), so
both must carry the welcome guest. The fresh environment gets the wheel with ``--no-deps``; its
dependencies come from this interpreter's site-packages through a ``.pth`` line (a path listed there
is appended to ``sys.path`` only: the editable wasmhost installed beside them is not activated, and
the subprocesses run without PYTHONPATH, so only the installed wheel can answer).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WELCOME = ROOT / "guest_examples" / "welcome" / "welcome.wasm"


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("WASMHOST_")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory, clean_env: dict[str, str]) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out, env=clean_env)
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory, clean_env: dict[str, str]) -> Path:
    home = tmp_path_factory.mktemp("venv") / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", home], cwd=home.parent, env=clean_env)
    python = home / "bin" / "python"
    (wheel,) = dist.glob("wasmhost-*.whl")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
         cwd=home.parent, env=clean_env)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=home.parent, env=clean_env).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_wasmhost_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    return home


def test_sdist_and_wheel_carry_the_welcome_guest_itself(dist: Path) -> None:
    expected = WELCOME.read_bytes()
    (sdist,) = dist.glob("wasmhost-*.tar.gz")
    with tarfile.open(sdist) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith("/wasmhost/welcome.wasm")]
        assert member.isfile(), "the sdist must hold the file, not the source tree's symlink"
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == expected
    (wheel,) = dist.glob("wasmhost-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("wasmhost/welcome.wasm") == expected
        assert "wasmhost/py.typed" in zf.namelist()
        console = ROOT / "wasmhost" / "console" / "static"
        for asset in console.iterdir():  # the gateway serves /console from the installed package
            assert zf.read(f"wasmhost/console/static/{asset.name}") == asset.read_bytes(), asset.name
        assert not [n for n in zf.namelist() if n.startswith(("tests/", "bench/", "guest_examples/"))]


def test_installed_wheel_runs_the_demo_from_an_empty_folder(venv: Path, dist: Path, tmp_path: Path,
                                                            clean_env: dict[str, str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([venv / "bin" / "python", "-c", "import wasmhost; print(wasmhost.__file__)"], cwd=empty,
                 env=clean_env)
    assert Path(where.strip()).is_relative_to(venv), f"wasmhost imported from {where} instead of the wheel"

    (wheel,) = dist.glob("wasmhost-*.whl")
    version = wheel.name.split("-")[1]
    assert _run([venv / "bin" / "wasmhost", "--version"], cwd=empty, env=clean_env).strip() == f"wasmhost {version}"

    out = _run([venv / "bin" / "wasmhost", "demo", "--state", tmp_path / "state"], cwd=empty, env=clean_env,
               timeout=120)
    assert "welcomed alice: 2/2 devices" in out
    assert "'other-tenant' received 0 push(es)" in out
    assert list(empty.iterdir()) == []


def test_installed_wheel_scaffolds_every_language(venv: Path, tmp_path: Path, clean_env: dict[str, str]) -> None:
    from wasmhost.scaffold import LANGUAGES

    for language, lang in LANGUAGES.items():
        _run([venv / "bin" / "wasmhost", "new", language, f"fn-{language}"], cwd=tmp_path, env=clean_env)
        project = tmp_path / f"fn-{language}"
        assert (project / "build.sh").stat().st_mode & 0o111 and (project / "input.json").is_file()
        assert "./build.sh" in (project / "README.md").read_text()
        sdk = ROOT / "wasmhost" / "scaffold" / "sdk" / lang.sdk[0]
        assert (project / lang.sdk[1]).read_bytes() == sdk.read_bytes()  # the SDK itself, from the wheel
