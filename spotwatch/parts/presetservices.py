"""What preset hooks reach besides programs (`spotwatch.presets.base.Services`), as the
daemon has it: the node's name as the cloud gives it (AWS: IMDS local-hostname), the AWS
clients' region rule, and the Docker Engine through spotwatch.parts.runtime."""

from __future__ import annotations

import socket
import threading
from typing import Callable, Dict, List, Optional, Sequence

from spotwatch.parts.awsapi.clients import AwsClients, AwsSetupError
from spotwatch.parts.runtime.engine import Engine, connect
from spotwatch.presets.base import Container, ContainerRuntime, RuntimeUnavailable, Stopped


class DaemonServices:
    """`cloud_node_name`: the cloud's name for this VM, or None (then the host name)."""

    def __init__(
        self, clients: AwsClients, cloud_node_name: Callable[[], Optional[str]]
    ) -> None:
        self.clients = clients
        self._cloud_node_name = cloud_node_name
        self._lock = threading.Lock()
        self._node: Optional[str] = None

    def node_name(self) -> str:
        """Asked once (the first preset that needs it), then kept."""
        with self._lock:
            if self._node is None:
                self._node = self._cloud_node_name() or socket.gethostname()
            return self._node

    def region(self) -> Optional[str]:
        try:
            return self.clients.region()
        except AwsSetupError:
            return None

    def docker(self, host: str) -> ContainerRuntime:
        engine, why = connect(host)
        if engine is None:
            raise RuntimeUnavailable(why)
        return EngineRuntime(engine)


class EngineRuntime:
    """`ContainerRuntime` on the Docker Engine seam (spotwatch.parts.runtime.engine)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def running(self, label: Optional[str], names: Sequence[str]) -> List[Container]:
        """Those with the label, and those with one of the names: the union (Docker's own
        filters would want both)."""
        asks = [self.engine.find(label=label)] if label else []
        asks += [self.engine.find(names=names)] if names else []
        found: Dict[str, Container] = {}
        for listed in asks or [self.engine.find()]:
            if listed.error:
                raise RuntimeUnavailable(listed.error)
            found.update((c.id, Container(c.id, c.name)) for c in listed.containers)
        return list(found.values())

    def stop_all(self, containers: Sequence[Container], t: int) -> List[Stopped]:
        stops = self.engine.stop([c.id for c in containers], t)
        return [
            Stopped(container, stop.exited, stop.error or f"{stop.outcome} in {stop.seconds:.1f} s")
            for container, stop in zip(containers, stops)
        ]

    def version(self) -> str:
        return self.engine.server()

    def close(self) -> None:
        self.engine.close()
