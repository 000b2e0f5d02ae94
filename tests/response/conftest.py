"""Fixtures for the response tests (helpers are in response_support.py)."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import subprocess
import uuid
from typing import Iterator

import pytest
from response_support import Records, ThrowawayUser


@pytest.fixture
def records() -> Iterator[Records]:
    """Everything spotwatch logs during the test, kept away from pytest's own capture (which
    would hold every output line in memory and distort the memory measurements)."""
    handler = Records()
    logger = logging.getLogger("spotwatch")
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


@pytest.fixture
def throwaway_user() -> Iterator[ThrowawayUser]:
    """A system user with a supplementary group, created for the test and deleted after."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user and to switch to it")
    if shutil.which("useradd") is None or shutil.which("groupadd") is None:
        pytest.skip("useradd/groupadd not installed")
    tag = uuid.uuid4().hex[:8]
    name, extra = f"swt{tag}", f"swg{tag}"
    home = f"/nonexistent/{name}"
    subprocess.run(["groupadd", "--system", extra], check=True)
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", home, "-G", extra, name],
            check=True,
        )
        try:
            entry = pwd.getpwnam(name)
            yield ThrowawayUser(
                name, entry.pw_uid, entry.pw_gid, extra, grp.getgrnam(extra).gr_gid, home
            )
        finally:
            subprocess.run(["userdel", name], check=False)
    finally:
        subprocess.run(["groupdel", extra], check=False)
