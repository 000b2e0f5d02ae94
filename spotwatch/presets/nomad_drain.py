"""`nomad-drain`: drain this Nomad client; when the instance stays after all (`cancel`,
`start`), end the drain and make the node eligible again.

    with: {bin: nomad}

    nomad node drain -self -enable -deadline Ts -yes
    nomad node drain -self -disable -yes, then nomad node eligibility -self -enable

The allocations get the whole of T: Nomad stops what is left at the deadline itself.
"""

from __future__ import annotations

from typing import Any, List, Mapping

from spotwatch.config.checks import leaf
from spotwatch.presets.base import Call, ProgramPreset, counterpart, program_name


class NomadDrain(ProgramPreset):
    name = "nomad-drain"
    summary = "nomad node drain -self (drain off and eligible again for cancel and start)"
    program = "nomad"
    arguments = {"bin": leaf(program_name)}

    def commands(self, args: Mapping[str, Any], call: Call) -> List[List[str]]:
        nomad = self.binary(args)
        if counterpart(call):
            return [
                [nomad, "node", "drain", "-self", "-disable", "-yes"],
                [nomad, "node", "eligibility", "-self", "-enable"],
            ]
        deadline = f"{call.seconds}s"
        return [[nomad, "node", "drain", "-self", "-enable", "-deadline", deadline, "-yes"]]


PRESET = NomadDrain()
