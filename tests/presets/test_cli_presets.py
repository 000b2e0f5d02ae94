"""kubectl-drain, nomad-drain, slurm-drain: the exact argv of CONTRACT §9 and its time
arithmetic (T, G = max(1, T - 10)), their counterparts for `cancel` and `start`, programs
run as hooks are (environment, output, limit), and the real `kubectl` draining and
uncordoning a node against a Kubernetes API stand-in. Stand-ins given as `bin` are real
programs recording their argv and environment."""

from __future__ import annotations

import logging
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest
from preset_support import (
    FixedServices,
    calls,
    context,
    per_hook_context,
    preset_hook,
    recorder,
    run_step,
)
from standins import KubeApi, Slurmctld

from spotwatch.clouds.registry import CLOUDS
from spotwatch.config.schema import Config, ImdsSettings
from spotwatch.parts.awsapi.clients import AwsClients
from spotwatch.parts.presetservices import DaemonServices
from spotwatch.simulator.imds import ImdsSimulator

NODE = "ip-10-0-0-10.ec2.internal"
CLOUDS_BY_NAME = CLOUDS


def drain_argv(t: int, kubeconfig: str = "") -> list:  # type: ignore[type-arg]
    config = ["--kubeconfig", kubeconfig] if kubeconfig else []
    return [*config, "drain", NODE, "--ignore-daemonsets", "--delete-emptydir-data",
            f"--grace-period={max(1, t - 10)}", f"--timeout={t}s"]  # fmt: skip


def test_kubectl_drain_runs_the_exact_argv_with_t_from_the_hooks_timeout(tmp_path: Path) -> None:
    """Timeout 45 s, deadline a minute away: T = 45, G = 35; node auto is the node name."""
    kubectl = recorder(tmp_path, "kubectl")
    hook = preset_hook(
        "kubectl-drain", {"bin": str(kubectl), "kubeconfig": "/etc/k.conf"}, timeout=45
    )
    outcome = run_step(hook, context(60), FixedServices(NODE))
    assert outcome.status == "ok", outcome.detail
    (call,) = calls(kubectl)
    assert call["argv"] == drain_argv(45, "/etc/k.conf")


def test_t_is_capped_by_the_time_left_in_whole_seconds(tmp_path: Path) -> None:
    """Timeout 600 s, deadline about 30 s away: T is the time left, floored (29 or 30 by
    when the hook starts), and G = T - 10; the hook sees the same deadline."""
    kubectl = recorder(tmp_path, "kubectl")
    hook = preset_hook("kubectl-drain", {"bin": str(kubectl)}, timeout=600)
    ctx = context(30)
    outcome = run_step(hook, ctx, FixedServices(NODE))
    assert outcome.status == "ok", outcome.detail
    (call,) = calls(kubectl)
    t = int(call["argv"][-1].removeprefix("--timeout=").removesuffix("s"))
    assert t in (29, 30)
    assert call["argv"] == drain_argv(t)
    assert int(call["env"]["SPOTWATCH_SECONDS_LEFT"]) in (t - 1, t)


@pytest.mark.parametrize(("timeout", "t", "grace"), [(5, 5, 1), (0.5, 1, 1), (11, 11, 1)])
def test_short_times_never_tell_a_tool_zero(
    tmp_path: Path, timeout: float, t: int, grace: int
) -> None:
    """T is at least 1 s and G = max(1, T - 10): kubectl reads --timeout=0s as no limit."""
    kubectl = recorder(tmp_path, "kubectl")
    hook = preset_hook("kubectl-drain", {"bin": str(kubectl), "node": "n1"}, timeout=timeout)
    run_step(hook, context(60))
    argv = calls(kubectl)[0]["argv"]
    assert argv[-2:] == [f"--grace-period={grace}", f"--timeout={t}s"]


@pytest.mark.parametrize("action", ["cancel", "start"])
def test_kubectl_uncordons_when_the_instance_stays(tmp_path: Path, action: str) -> None:
    kubectl = recorder(tmp_path, "kubectl")
    hook = preset_hook("kubectl-drain", {"bin": str(kubectl)}, actions=[action])
    assert run_step(hook, per_hook_context(action), FixedServices(NODE)).status == "ok"
    assert calls(kubectl)[0]["argv"] == ["uncordon", NODE]


def test_nomad_drain_and_its_counterpart(tmp_path: Path) -> None:
    """terminate: one drain with -deadline Ts; cancel: drain off, then eligible again."""
    nomad = recorder(tmp_path, "nomad")
    actions = ["terminate", "cancel"]
    hook = preset_hook("nomad-drain", {"bin": str(nomad)}, timeout=80, actions=actions)
    assert run_step(hook, context(120)).status == "ok"
    assert run_step(hook, per_hook_context("cancel")).status == "ok"
    assert [c["argv"] for c in calls(nomad)] == [
        ["node", "drain", "-self", "-enable", "-deadline", "80s", "-yes"],
        ["node", "drain", "-self", "-disable", "-yes"],
        ["node", "eligibility", "-self", "-enable"],
    ]


def test_a_failing_first_command_stops_the_sequence(tmp_path: Path) -> None:
    nomad = recorder(tmp_path, "nomad", exit_code=3)
    hook = preset_hook("nomad-drain", {"bin": str(nomad)}, actions=["start"])
    outcome = run_step(hook, per_hook_context("start"))
    assert outcome.status == "failed"
    assert outcome.detail.startswith(f"{nomad} node drain -self -disable -yes: exit 3")
    assert len(calls(nomad)) == 1


def test_slurm_drain_names_the_action_and_notice_time_in_one_reason_item(tmp_path: Path) -> None:
    scontrol = recorder(tmp_path, "scontrol")
    hook = preset_hook("slurm-drain", {"bin": str(scontrol)}, actions=["stop", "start"])
    ctx = context(60, action="stop")
    assert run_step(hook, ctx).status == "ok"
    assert run_step(hook, per_hook_context("start")).status == "ok"
    short = socket.gethostname().split(".")[0]
    drain, resume = (c["argv"] for c in calls(scontrol))
    assert drain == ["update", f"NodeName={short}", "State=DRAIN",
                     f"Reason=spotwatch: stop at {ctx.notice.time_text}"]  # fmt: skip
    assert resume == ["update", f"NodeName={short}", "State=RESUME"]


def test_a_cli_preset_runs_as_a_hook_would(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The program gets the hook environment (SPOTWATCH_*, the minimal PATH, the hook's
    env) and nothing of the daemon's; its output is logged tagged with the hook's name."""
    slurm = recorder(tmp_path, "scontrol")
    hook = preset_hook(
        "slurm-drain", {"bin": str(slurm), "node": "gpu-${instance_id}"}, name="slurm",
        env={"SLURM_CONF": "/etc/slurm/slurm.conf"},
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="spotwatch"):
        assert run_step(hook, context(60)).status == "ok"
    env = calls(slurm)[0]["env"]
    assert env["SLURM_CONF"] == "/etc/slurm/slurm.conf" and env["SPOTWATCH_ACTION"] == "terminate"
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert not {k for k in env if k not in ("PATH", "SLURM_CONF", "LC_CTYPE")
                and not k.startswith("SPOTWATCH_")}  # fmt: skip
    assert calls(slurm)[0]["argv"][1] == "NodeName=gpu-i-0123456789abcdef0"
    assert "[slurm] stand-in ran update NodeName=gpu-i-0123456789abcdef0" in caplog.text


def test_a_cli_that_outlives_t_is_stopped_at_the_hooks_limit(tmp_path: Path) -> None:
    kubectl = recorder(tmp_path, "kubectl", sleep=30)
    hook = preset_hook("kubectl-drain", {"bin": str(kubectl), "node": "n"}, timeout=1)
    started = time.monotonic()
    outcome = run_step(hook, context(60))
    assert outcome.status == "timeout", outcome.detail
    assert time.monotonic() - started < 4


def test_a_program_not_found_fails_naming_it(tmp_path: Path) -> None:
    hook = preset_hook("nomad-drain", {"bin": "spotwatch-no-such-nomad"})
    outcome = run_step(hook, context(60))
    assert outcome.status == "failed"
    assert "spotwatch-no-such-nomad: not found on the daemon's PATH" in outcome.detail


def test_dry_run_logs_the_exact_command_and_runs_nothing(tmp_path: Path) -> None:
    kubectl = recorder(tmp_path, "kubectl")
    hook = preset_hook("kubectl-drain", {"bin": str(kubectl)}, timeout=45)
    outcome = run_step(hook, context(60, dry_run=True), FixedServices(NODE))
    assert outcome.status == "ok"
    assert outcome.detail == f"would run {kubectl} " + " ".join(drain_argv(45))
    assert calls(kubectl) == []


def test_node_auto_is_the_clouds_name_for_the_vm_else_the_host_name() -> None:
    """On AWS the cloud names the node by IMDS meta-data/local-hostname (the name EKS
    registers); where IMDS does not answer, or a cloud has no such name, the host name."""
    aws = CLOUDS_BY_NAME["aws"]
    with ImdsSimulator() as imds:
        config = Config(imds=ImdsSettings(endpoint=imds.endpoint, timeout=0.5))
        services = DaemonServices(AwsClients(), lambda: aws.node_name(config))
        assert services.node_name() == "ip-10-0-0-10.ec2.internal"
    lost = Config(imds=ImdsSettings(endpoint="http://127.0.0.1:9", timeout=0.2))
    assert DaemonServices(AwsClients(), lambda: aws.node_name(lost)).node_name() == (
        socket.gethostname()
    )
    for other in (name for name in CLOUDS_BY_NAME if name != "aws"):
        assert CLOUDS_BY_NAME[other].node_name(lost) is None


@pytest.fixture
def kube() -> Iterator[KubeApi]:
    api = KubeApi((NODE,))
    yield api
    api.close()


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_real_kubectl_cordons_drains_and_uncordons_the_node(
    tmp_path: Path, kube: KubeApi
) -> None:
    """kubectl (on the daemon's PATH) accepts the argv: it cordons the node the preset
    named, lists its pods to evict, and uncordons it for `start`."""
    config = kube.kubeconfig(tmp_path)
    hook = preset_hook(
        "kubectl-drain", {"kubeconfig": str(config)}, actions=["terminate", "start"],
        env={"HOME": str(tmp_path)},  # kubectl's discovery cache: $HOME/.kube (docs/presets.md)
    )  # fmt: skip
    drained = run_step(hook, context(60), FixedServices(NODE))
    assert drained.status == "ok", drained.detail
    assert kube.unschedulable[NODE] is True
    pods = f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE}"
    assert any(m == "GET" and path.startswith(pods) for m, path, _ in kube.requests)
    back = run_step(hook, per_hook_context("start"), FixedServices(NODE))
    assert back.status == "ok", back.detail
    assert kube.unschedulable[NODE] is False
    assert [body for _, body in kube.patches()] == [
        '{"spec":{"unschedulable":true}}',
        '{"spec":{"unschedulable":null}}',
    ]


@pytest.fixture
def slurmctld(tmp_path: Path) -> Iterator[Slurmctld]:
    for program in ("scontrol", "munged", "mungekey"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (Debian slurm-client)")
    controller = Slurmctld(tmp_path / "slurm")
    yield controller
    controller.close()


def test_the_real_scontrol_sends_the_drain_and_the_resume_for_the_node(
    tmp_path: Path, slurmctld: Slurmctld
) -> None:
    """scontrol (on the daemon's PATH, SLURM_CONF through the hook's env) accepts the argv
    and sends REQUEST_UPDATE_NODE for the node, with the reason naming the action and the
    notice time, then the one for RESUME. The stand-in controller answers nothing, so each
    step fails with scontrol's own words after the request went out."""
    hook = preset_hook(
        "slurm-drain", {"node": "gpu-7"}, actions=["terminate", "start"],
        env={"SLURM_CONF": str(slurmctld.conf)},
    )  # fmt: skip
    ctx = context(60)
    drained = run_step(hook, ctx)
    resumed = run_step(hook, per_hook_context("start"))
    for outcome in (drained, resumed):
        assert outcome.status == "failed" and "exit 1" in outcome.detail, outcome.detail
    drain, resume = slurmctld.requests
    reason = f"spotwatch: terminate at {ctx.notice.time_text}".encode()
    assert b"\x00\x00\x00\x06gpu-7\x00" in drain and reason + b"\x00" in drain
    assert b"\x00\x00\x00\x06gpu-7\x00" in resume and b"spotwatch" not in resume
