"""The effective config of a running service: files and environment, plus EC2 user data.

User data comes from IMDS, whose endpoint is itself configured; so the config is loaded
once without it (to learn `imds.*` and the cloud), user data is fetched when `imds.user_data`
is on and the cloud is one that has it (AWS: clouds/confine.py), and the config is loaded
again with it. A user-data section that does not validate is reported and ignored; the file
config stays in force.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Mapping, Optional

from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.clouds.registry import settle
from spotwatch.config.load import load_config_report
from spotwatch.config.schema import Config
from spotwatch.logevents import emit

log = logging.getLogger("spotwatch.config")

USER_DATA_PATH = "user-data"


def fetch_user_data(config: Config) -> Optional[bytes]:
    """The instance's user data, or None (absent, or IMDS not answering: logged once)."""
    client = ImdsClient.for_a_few_reads(config.imds)
    try:
        reply = client.get(USER_DATA_PATH, deadline=time.monotonic() + 3 * config.imds.timeout)
    except ImdsError as failure:
        emit(log, logging.WARNING, "user-data", f"user data not read: {failure}")
        return None
    finally:
        client.close()
    if reply.status == 404:
        emit(log, logging.INFO, "user-data", "no user data")
        return None
    if reply.status != 200:
        emit(log, logging.WARNING, "user-data", f"user data not read: HTTP {reply.status}")
        return None
    return reply.body


def load_service_config(
    path: Optional[str], *, env: Optional[Mapping[str, str]] = None, with_user_data: bool = True
) -> Config:
    """Files + environment (+ user data). Raises ConfigError for a bad file or environment."""
    env = os.environ if env is None else env
    report = load_config_report(path, env=env)
    if not (with_user_data and settle(report.config).config.imds.user_data):
        return report.config
    raw = fetch_user_data(report.config)
    if raw is None:
        return report.config
    report = load_config_report(path, env=env, user_data=raw)
    if report.user_data_note:
        emit(log, logging.INFO, "user-data", report.user_data_note)
    if report.user_data_problems:
        emit(
            log,
            logging.ERROR,
            "user-data-invalid",
            "the spotwatch section of user data is ignored:\n  "
            + "\n  ".join(report.user_data_problems),
        )
    return report.config
