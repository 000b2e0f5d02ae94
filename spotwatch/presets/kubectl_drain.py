"""`kubectl-drain`: drain this node out of a Kubernetes cluster; `uncordon` it when the
instance stays after all (`cancel`, `start`).

    with: {node: auto, kubeconfig: /etc/kubernetes/admin.conf, bin: kubectl}

    kubectl [--kubeconfig K] drain NODE --ignore-daemonsets --delete-emptydir-data
            --grace-period=G --timeout=Ts            G = max(1, T - 10)
    kubectl [--kubeconfig K] uncordon NODE            (cancel, start)

`node: auto` is the node's name as EKS and most AWS clusters register it: IMDS
`meta-data/local-hostname` (elsewhere the host name). Pods get G seconds to end, 10 s less
than the hook has, so kubectl still sees them go and reports it before its own timeout.
"""

from __future__ import annotations

from typing import Any, List, Mapping

from spotwatch.config.checks import leaf
from spotwatch.config.values import absolute_path
from spotwatch.presets.base import Call, ProgramPreset, counterpart, node_or_auto, program_name

POD_GRACE_MARGIN = 10  # seconds the pods' grace period leaves kubectl before the hook's end


class KubectlDrain(ProgramPreset):
    name = "kubectl-drain"
    summary = "kubectl drain this node (uncordon for cancel and start)"
    program = "kubectl"
    arguments = {
        "node": leaf(node_or_auto),
        "kubeconfig": leaf(absolute_path),
        "bin": leaf(program_name),
    }
    defaults = {"node": "auto"}

    def commands(self, args: Mapping[str, Any], call: Call) -> List[List[str]]:
        kubectl = [self.binary(args)]
        if args.get("kubeconfig"):
            kubectl += ["--kubeconfig", args["kubeconfig"]]
        node = call.services.node_name() if args["node"] == "auto" else args["node"]
        if counterpart(call):
            return [[*kubectl, "uncordon", node]]
        grace = max(1, call.seconds - POD_GRACE_MARGIN)
        return [
            [
                *kubectl,
                "drain",
                node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                f"--grace-period={grace}",
                f"--timeout={call.seconds}s",
            ]
        ]


PRESET = KubectlDrain()
