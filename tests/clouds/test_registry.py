"""The cloud as a seam: one folder per cloud and one registration, `cloud: auto` from the
firmware, and what only AWS has turned off (and said) elsewhere."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Set

import pytest

from spotwatch.clouds.confine import ONLY_AWS
from spotwatch.clouds.dmi import DmiFacts, read_dmi
from spotwatch.clouds.registry import CLOUDS, FALLBACK, settle
from spotwatch.commands.rehearsed import ACTIONS
from spotwatch.config.errors import ConfigError
from spotwatch.config.load import load_config
from spotwatch.config.schema import CLOUD_NAMES, Config

PACKAGE = Path(__file__).resolve().parents[2] / "spotwatch"
AZURE_TAG = "7783-7084-3265-9085-8269-3286-77"


def python_files(under: Path) -> List[Path]:
    return sorted(under.rglob("*.py"))


def cloud_names_in_code(path: Path) -> Set[str]:
    """Where a module holds a cloud's name: compared with (`== "gcp"`, `in ("aws", "gcp")`),
    or, for the clouds whose parts all live in their folder, as any string. (AWS's own parts
    outside clouds/aws say "aws" where AWS's APIs do: an ARN's partition.) Docstrings aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and part.value in CLOUD_NAMES:
                    found.add(str(part.value))
        elif (
            isinstance(node, ast.Constant)
            and node.value in CLOUD_NAMES
            and node.value != FALLBACK.name
        ):
            found.add(str(node.value))
    return found


def test_the_registry_and_the_config_know_the_same_clouds() -> None:
    """`cloud:` is checked against config's CLOUD_NAMES; each has its `Cloud` in the registry,
    and every rehearsal a cloud offers is one `rehearse --action` knows."""
    assert set(CLOUDS) == set(CLOUD_NAMES)
    for name, cloud in CLOUDS.items():
        assert cloud.name == name
        assert set(cloud.rehearsals) <= set(ACTIONS), name


def test_a_cloud_is_one_folder_and_one_registration() -> None:
    """No `if cloud == "gcp"` anywhere: outside clouds/ (and config/, where the contract's
    keys live) no code holds a cloud's name as a string, and only the registry imports a
    cloud's folder. So a fourth cloud is its folder, one line in clouds/registry.py, and its
    name (with its settings, if any) in config/."""
    allowed = {PACKAGE / "clouds", PACKAGE / "config"}
    named: Dict[str, Set[str]] = {}
    for path in python_files(PACKAGE):
        if any(folder in path.parents for folder in allowed):
            continue
        found = cloud_names_in_code(path)
        if found:
            named[str(path.relative_to(PACKAGE))] = found
    assert named == {}
    importers: Dict[str, List[str]] = {name: [] for name in CLOUD_NAMES}
    for path in python_files(PACKAGE):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        for name in CLOUD_NAMES:
            folder = PACKAGE / "clouds" / name
            if folder in path.parents:
                continue
            if any(m.startswith(f"spotwatch.clouds.{name}") for m in modules):
                importers[name].append(str(path.relative_to(PACKAGE)))
    # AWS's own parts (parts/, the AWS-only checks, telemetry's sinks) use its IMDS client.
    assert importers["gcp"] == ["clouds/registry.py"]
    assert importers["azure"] == ["clouds/registry.py"]


def dmi(tmp_path: Path, **fields: str) -> DmiFacts:
    """A folder of DMI files, as /sys/class/dmi/id has them, read the way the daemon does."""
    for name, value in fields.items():
        (tmp_path / name).write_text(value + "\n")
    return read_dmi(str(tmp_path))


@pytest.mark.parametrize(
    ("fields", "expected", "why"),
    [
        ({"sys_vendor": "Google", "product_name": "Google Compute Engine"}, "gcp", "product_name"),
        (
            {
                "sys_vendor": "Microsoft Corporation",
                "product_name": "Virtual Machine",
                "chassis_asset_tag": AZURE_TAG,
            },
            "azure",
            "chassis_asset_tag",
        ),
        ({"sys_vendor": "Amazon EC2", "product_name": "m5.large"}, "aws", "sys_vendor"),
        # A Hyper-V guest off Azure has Microsoft's names but not Azure's asset tag.
        (
            {"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine"},
            "aws",
            "no cloud",
        ),
        (
            {"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)"},
            "aws",
            "no cloud",
        ),
    ],
)
def test_auto_reads_the_cloud_from_the_firmware(
    tmp_path: Path, fields: Dict[str, str], expected: str, why: str
) -> None:
    """`cloud: auto` takes the cloud the DMI strings name (sys_vendor, product_name,
    chassis_asset_tag), else AWS; the reason names the file and what it said."""
    settled = settle(Config(), dmi(tmp_path, **fields))
    assert settled.cloud.name == expected
    assert settled.config.cloud == expected
    assert why in settled.why


def test_no_dmi_at_all_means_aws(tmp_path: Path) -> None:
    """A machine (or container) without /sys/class/dmi/id: nothing readable, so AWS."""
    settled = settle(Config(), read_dmi(str(tmp_path / "absent")))
    assert settled.cloud is FALLBACK and "nothing readable" in settled.why


def test_a_named_cloud_wins_over_the_firmware(tmp_path: Path) -> None:
    facts = dmi(tmp_path, product_name="Google Compute Engine")
    settled = settle(Config(cloud="azure"), facts)
    assert settled.cloud.name == "azure" and settled.why == "configured (cloud: azure)"


def test_cloud_and_its_settings_are_checked_like_every_key(tmp_path: Path) -> None:
    """A bad `cloud`, `gcp.*` or `azure.*` names its key path (the CLI exits 78 on it)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "cloud: oracle\ngcp: {endpoint: 'https://x', notice: soon}\nazure: {acknowledge: 3}\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(str(path), env={}, check_permissions=False)
    text = "\n".join(raised.value.problems)
    for key in ("cloud:", "gcp.endpoint:", "gcp.notice:", "azure.acknowledge:"):
        assert key in text, text


def test_gce_metadata_host_names_the_metadata_server(tmp_path: Path) -> None:
    """GCE_METADATA_HOST (host[:port], as Google's SDKs read it) overrides gcp.endpoint."""
    path = tmp_path / "c.yaml"
    path.write_text("gcp: {endpoint: 'http://metadata.google.internal'}\n")
    env = {"GCE_METADATA_HOST": "127.0.0.1:8089"}
    config = load_config(str(path), env=env, check_permissions=False)
    assert config.gcp.endpoint == "http://127.0.0.1:8089"


@pytest.mark.parametrize("cloud", ["gcp", "azure"])
def test_aws_only_parts_are_off_elsewhere_and_said(cloud: str) -> None:
    """Every AWS-only part configured: on another cloud each is off in the config the daemon
    runs on and named in one note; on AWS nothing changes and nothing is said."""
    configured = replace(
        Config(),
        ecs=replace(Config().ecs, enabled=True),
        load_balancer=replace(Config().load_balancer, target_groups=("arn:tg",)),
        autoscaling=replace(Config().autoscaling, detach=True),
        instance=replace(Config().instance, after_response="stop"),
        hibernate=replace(Config().hibernate, trigger="command"),
        events=replace(Config().events, eventbridge_bus="fleet"),
    )
    settled = settle(replace(configured, cloud=cloud))
    off = settled.config
    assert off.ecs.enabled is False and off.load_balancer.enabled is False
    assert off.autoscaling.enabled is False and off.autoscaling.detach is False
    assert off.instance.after_response == "none" and off.hibernate.trigger == "none"
    assert off.events.eventbridge_bus is None and off.imds.user_data is False
    assert len(settled.notes) == len(ONLY_AWS) - 1  # user data is on by default: said by none
    assert all(note.endswith(f"off on {cloud}") for note in settled.notes)
    on_aws = settle(replace(configured, cloud="aws"))
    assert on_aws.notes == () and on_aws.config == replace(configured, cloud="aws")
