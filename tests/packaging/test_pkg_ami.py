"""The AMI-baking artefacts in packaging/ami/ parse and say what they must: the Image
Builder component installs the package and validates it (`spotwatch check`, `systemctl
is-enabled spotwatch`), the Packer snippet does the same, and the cloud-init example's
`spotwatch:` section is a config spotwatch accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from spotwatch.config.load import load_config
from spotwatch.config.userdata import extract_spotwatch_section

AMI = Path(__file__).resolve().parents[2] / "packaging" / "ami"


def _commands(phase: Dict[str, Any]) -> List[str]:
    found: List[str] = []
    for step in phase["steps"]:
        assert {"name", "action", "inputs"} <= set(step), step
        if step["action"] == "ExecuteBash":
            found.extend(step["inputs"]["commands"])
    return found


def test_image_builder_component() -> None:
    doc = yaml.safe_load((AMI / "imagebuilder-component.yaml").read_text())
    assert doc["schemaVersion"] == 1.0
    assert doc["name"] == "spotwatch" and doc["description"]
    parameters = {name for item in doc["parameters"] for name in item}
    assert parameters == {"PackageS3Uri"}
    phases = {phase["name"]: phase for phase in doc["phases"]}
    assert {"build", "validate"} <= set(phases)
    assert set(phases) <= {"build", "validate", "test"}
    for phase in phases.values():
        for step in phase["steps"]:
            assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", step["name"]), step["name"]

    download = phases["build"]["steps"][0]
    assert download["action"] == "S3Download"
    assert download["inputs"][0]["source"] == "{{ PackageS3Uri }}"
    build = "\n".join(_commands(phases["build"]))
    assert "dnf install -y ./spotwatch.rpm" in build
    assert "apt-get install -y -q ./spotwatch.deb" in build
    validate = _commands(phases["validate"])
    assert "spotwatch check" in validate
    assert any("systemctl is-enabled spotwatch" in command for command in validate)
    if shutil.which("bash"):
        for command in _commands(phases["build"]) + validate + _commands(phases["test"]):
            done = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert done.returncode == 0, (command, done.stderr)


def test_packer_provisioner() -> None:
    text = (AMI / "packer-provisioner.pkr.hcl").read_text()
    try:
        import hcl2  # type: ignore[import-not-found]
    except ImportError:
        hcl2 = None
    if hcl2 is not None:
        parsed = hcl2.loads(text)
        build = parsed["build"][0]
        # (newer python-hcl2 keeps the quotes of block labels and strings)
        shells = [
            body for p in build["provisioner"] for key, body in p.items()
            if key.strip('"') == "shell"
        ]  # fmt: skip
        inline = " ".join(line.strip('"') for line in shells[0]["inline"])
    else:  # no parser: at least balanced braces and the commands present
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', re.sub(r"(?m)^\s*#.*$", "", text))
        assert bare.count("{") == bare.count("}") and bare.count("[") == bare.count("]")
        inline = text
    assert "dnf install -y /tmp/spotwatch.rpm" in inline
    assert "spotwatch check" in inline
    assert "systemctl is-enabled spotwatch.service" in inline


def test_cloud_init_user_data(tmp_path: Path) -> None:
    raw = (AMI / "cloud-init-user-data.yaml").read_bytes()
    assert raw.startswith(b"#cloud-config\n")
    document = yaml.safe_load(raw)
    assert document["write_files"][0]["path"] == "/usr/local/bin/spot-checkpoint"
    section, _description = extract_spotwatch_section(raw)
    assert section is not None and section["hooks"][0]["name"] == "checkpoint"
    # spotwatch accepts it as its user-data layer (on top of an empty config file)
    config_file = tmp_path / "config.yaml"
    config_file.write_text("{}\n")
    config_file.chmod(0o600)
    config = load_config(str(config_file), env={}, user_data=raw, check_permissions=False)
    assert [hook.name for hook in config.hooks] == ["checkpoint", "deregister"]
    assert config.deadline_margin == 15.0


@pytest.mark.parametrize("name", ["imagebuilder-component.yaml", "cloud-init-user-data.yaml"])
def test_yaml_files_parse(name: str) -> None:
    assert isinstance(yaml.safe_load((AMI / name).read_text()), dict)
