"""`slurm-drain`: set this Slurm node to DRAIN (no new jobs; running ones go on), and back
to RESUME when the instance stays after all (`cancel`, `start`).

    with: {node: auto, bin: scontrol}

    scontrol update NodeName=N State=DRAIN Reason="spotwatch: ACTION at NOTICE_TIME"
    scontrol update NodeName=N State=RESUME          (cancel, start)

`node: auto` is the short host name (what slurmd registers by default). The reason is one
argv item: no shell runs, so nothing in it needs quoting.
"""

from __future__ import annotations

import socket
from typing import Any, List, Mapping

from spotwatch.config.checks import leaf
from spotwatch.presets.base import Call, ProgramPreset, counterpart, node_or_auto, program_name


class SlurmDrain(ProgramPreset):
    name = "slurm-drain"
    summary = "scontrol update this node to State=DRAIN (RESUME for cancel and start)"
    program = "scontrol"
    arguments = {"node": leaf(node_or_auto), "bin": leaf(program_name)}
    defaults = {"node": "auto"}

    def commands(self, args: Mapping[str, Any], call: Call) -> List[List[str]]:
        node = short_host_name() if args["node"] == "auto" else args["node"]
        update = [self.binary(args), "update", f"NodeName={node}"]
        if counterpart(call):
            return [[*update, "State=RESUME"]]
        reason = f"spotwatch: {call.action} at {call.values['notice_time']}"
        return [[*update, "State=DRAIN", f"Reason={reason}"]]


def short_host_name() -> str:
    return socket.gethostname().split(".", 1)[0]


PRESET = SlurmDrain()
