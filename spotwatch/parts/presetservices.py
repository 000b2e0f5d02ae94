"""What preset hooks reach besides programs (`spotwatch.presets.base.Services`), as the
daemon has it: IMDS for the node's name, the AWS clients' region rule, and the container
runtime for docker-stop."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Dict, List, Optional, Sequence

from spotwatch.config.schema import ImdsSettings
from spotwatch.detection.imds import ImdsClient, ImdsError
from spotwatch.logevents import emit
from spotwatch.parts.awsapi.clients import AwsClients, AwsSetupError
from spotwatch.parts.runtime.engine import Engine, connect
from spotwatch.presets.base import Container, ContainerRuntime, RuntimeUnavailable, Stopped

log = logging.getLogger("spotwatch.hooks")

LOCAL_HOSTNAME_PATH = "meta-data/local-hostname"


class DaemonServices:
    def __init__(self, imds: ImdsSettings, clients: AwsClients) -> None:
        self.imds = imds
        self.clients = clients
        self._lock = threading.Lock()
        self._node: Optional[str] = None

    def node_name(self) -> str:
        """IMDS local-hostname (the name EKS and kubeadm on AWS register the node by), asked
        once; where IMDS does not answer it, the host name, said once in the log."""
        with self._lock:
            if self._node is None:
                self._node = self._local_hostname() or socket.gethostname()
            return self._node

    def _local_hostname(self) -> Optional[str]:
        client = ImdsClient.for_a_few_reads(self.imds)
        try:
            reply = client.get(LOCAL_HOSTNAME_PATH)
            text = reply.body.decode("ascii", "replace").strip()
            if reply.status == 200 and text and not any(c.isspace() for c in text):
                return text.split()[0]
            why = f"HTTP {reply.status}"
        except ImdsError as failure:
            why = str(failure)
        finally:
            client.close()
        emit(
            log,
            logging.WARNING,
            "node-name",
            f"IMDS {LOCAL_HOSTNAME_PATH} gave no name ({why}); presets use the host name",
        )
        return None

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
