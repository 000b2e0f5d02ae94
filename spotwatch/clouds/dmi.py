"""What the firmware says about the machine: `cloud: auto` decides from it.

Linux shows the SMBIOS strings in /sys/class/dmi/id/, readable by anyone. Three of them name
the cloud a VM runs on (the same ones cloud-init looks at): `sys_vendor` ("Amazon EC2",
"Google", "Microsoft Corporation"), `product_name` ("Google Compute Engine", "Virtual
Machine") and `chassis_asset_tag` (Azure's is the fixed 7783-7084-3265-9085-8269-3286-77,
which tells an Azure VM from any other Hyper-V guest). A file that is missing or unreadable
(a container, a machine without SMBIOS) says nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

DMI_ROOT = "/sys/class/dmi/id"
FIELDS = ("sys_vendor", "product_name", "chassis_asset_tag")
MAX_FIELD = 256  # SMBIOS strings are short; anything longer is not one


@dataclass(frozen=True)
class DmiFacts:
    sys_vendor: Optional[str] = None
    product_name: Optional[str] = None
    chassis_asset_tag: Optional[str] = None
    root: str = DMI_ROOT

    def where(self, field: str) -> str:
        """`/sys/class/dmi/id/product_name is 'Google Compute Engine'`, for `check`."""
        return f"{os.path.join(self.root, field)} is {getattr(self, field)!r}"

    def summary(self) -> str:
        found = [f"{name}={getattr(self, name)!r}" for name in FIELDS if getattr(self, name)]
        return ", ".join(found) if found else f"nothing readable in {self.root}"


def read_dmi(root: str = DMI_ROOT) -> DmiFacts:
    """The three fields under `root` (tests point it at a folder of their own)."""
    values = {name: _read(os.path.join(root, name)) for name in FIELDS}
    return DmiFacts(root=root, **values)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FIELD + 1)
    except OSError:
        return None
    text = raw[:MAX_FIELD].decode("utf-8", "replace").strip()
    return text or None
