"""The folders around what root reads and writes (docs/security.md §1 and §7): whoever may
write a folder can replace what is in it, a root-owned 0644 config file included. As sshd's
StrictModes does, every folder from the config up to / must be root's and not writable by
group or others; so must `state_dir`; and root never writes through a planted symlink.
Bad ownerships are made with a real chown to another uid (we run as root)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest

from spotwatch.cli import main as cli_main
from spotwatch.config.errors import ConfigError
from spotwatch.config.load import load_config
from spotwatch.state.ledger import HibernateLedger
from spotwatch.state.store import StateStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")

OTHER_UID = 1000
FOLDER_PROBLEM = (
    "folder must be owned by root and not writable by group or others (hooks run as root)"
)


def config_in(folder: Path, text: str = "poll_interval: 5s\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yaml"
    config.write_text(text)
    config.chmod(0o644)
    return config


def problems(config: Path) -> List[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(str(config), env={}, check_permissions=True)
    return raised.value.problems


def test_a_root_owned_file_in_a_folder_another_user_owns_is_refused(tmp_path: Path) -> None:
    """The file is root's and 0644, but its folder's owner can replace it: refused, naming the
    folder, by `run` and `check` alike (exit 78). Before, only the file was checked."""
    config = config_in(tmp_path / "etc" / "spotwatch")
    assert load_config(str(config), env={}, check_permissions=True).poll_interval == 5.0
    os.chown(config.parent, OTHER_UID, OTHER_UID)
    assert problems(config) == [f"{config.parent}: {FOLDER_PROBLEM}"]
    assert cli_main(["run", "--once", "-c", str(config)]) == 78
    assert cli_main(["check", "-c", str(config)]) == 78


@pytest.mark.parametrize("mode", [0o775, 0o757])
def test_a_group_or_world_writable_folder_higher_up_is_refused(tmp_path: Path, mode: int) -> None:
    """Any folder up to / counts: one two levels above can have the others renamed away."""
    config = config_in(tmp_path / "etc" / "spotwatch")
    (tmp_path / "etc").chmod(mode)
    assert problems(config) == [f"{tmp_path / 'etc'}: {FOLDER_PROBLEM}"]


def test_a_sticky_folder_above_is_accepted_but_not_as_conf_d(tmp_path: Path) -> None:
    """In a sticky folder (like /tmp) only an entry's owner may rename or remove it, so a
    root-owned chain below one is safe. conf.d itself may not be sticky and writable: anyone
    could add a layer to it."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared").chmod(0o1777)
    config = config_in(tmp_path / "shared" / "spotwatch")
    assert load_config(str(config), env={}, check_permissions=True).poll_interval == 5.0
    confd = config.parent / "conf.d"
    confd.mkdir()
    confd.chmod(0o1777)
    assert problems(config) == [f"{confd}: {FOLDER_PROBLEM}"]


def test_a_conf_d_link_to_a_file_in_a_user_owned_folder_is_refused(tmp_path: Path) -> None:
    """A root-owned conf.d file reached through a symlink is only as safe as the folders
    of its target."""
    config = config_in(tmp_path / "etc")
    (config.parent / "conf.d").mkdir()
    elsewhere = config_in(tmp_path / "home" / "user", "dry_run: true\n")
    os.chown(elsewhere.parent, OTHER_UID, OTHER_UID)
    (config.parent / "conf.d" / "20-link.yaml").symlink_to(elsewhere)
    assert problems(config) == [f"{elsewhere.parent}: {FOLDER_PROBLEM}"]


@pytest.mark.parametrize("change", ["not-root", "group-writable"])
def test_a_state_dir_others_can_write_is_a_config_error(tmp_path: Path, change: str) -> None:
    """state.json decides which steps count as done: a state_dir another user owns, or that
    a group may write, is refused (exit 78) naming state_dir."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    config = config_in(tmp_path / "etc", f"state_dir: {state}\n")
    assert load_config(str(config), env={}, check_permissions=True).state_dir == str(state)
    if change == "not-root":
        os.chown(state, OTHER_UID, OTHER_UID)
    else:
        state.chmod(0o770)
    assert problems(config) == [
        f"state_dir: {state}: folder must be owned by root and not writable by group or "
        "others (its files decide what ran)"
    ]
    assert cli_main(["check", "-c", str(config)]) == 78


def test_poll_json_and_the_ledger_lock_are_not_opened_through_symlinks(tmp_path: Path) -> None:
    """Symlinks planted at poll.json and hibernate.lock: the writes fail (and are logged),
    the file they point at is untouched. Before, root overwrote it with the poll record
    (and opened it for writing as the lock)."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "poll.json").symlink_to(victim)
    (state / "hibernate.lock").symlink_to(victim)
    StateStore(str(state), boot_id="b").record_poll(0.0, "ok", True)
    HibernateLedger(str(state), boot_id="b").set_configured(True)
    assert victim.read_text() == "precious\n"
    assert (state / "poll.json").is_symlink()


STATE_PROBLEM = (
    "folder must be owned by root and not writable by group or others (its files decide what ran)"
)


@pytest.mark.parametrize("change", ["owner", "group-writable"])
def test_a_state_dir_in_a_folder_others_can_write_is_a_config_error(
    tmp_path: Path, change: str
) -> None:
    """The state folder itself is root's and 0700, but a folder above it another user owns
    (or a group may write) lets them rename it away and put their own, with a state.json
    that says the checkpoint already ran. As sshd's StrictModes does, every folder up to /
    must be root's and not writable by others: refused (exit 78) naming that folder. Before,
    only the state folder itself was checked."""
    above = tmp_path / "srv" / "shared"
    state = above / "spotwatch"
    state.mkdir(parents=True, mode=0o700)
    config = config_in(tmp_path / "etc", f"state_dir: {state}\n")
    assert load_config(str(config), env={}, check_permissions=True).state_dir == str(state)
    if change == "owner":
        os.chown(above, OTHER_UID, OTHER_UID)
    else:
        (tmp_path / "srv").chmod(0o775)
    bad = above if change == "owner" else tmp_path / "srv"
    assert problems(config) == [f"state_dir: {bad}: {STATE_PROBLEM}"]
    assert cli_main(["check", "-c", str(config)]) == 78


def test_a_state_dir_that_is_a_symlink_is_a_config_error(tmp_path: Path) -> None:
    """Root writes state.json and the ledger in the state folder: a symlink there is
    refused, even to a root-owned folder (a link is only as safe as whoever placed it)."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "state"
    link.symlink_to(real)
    config = config_in(tmp_path / "etc", f"state_dir: {link}\n")
    [problem] = problems(config)
    assert problem.startswith(f"state_dir: {link}: must not be a symlink")


def test_a_state_dir_not_made_yet_is_checked_where_it_will_be_made(tmp_path: Path) -> None:
    """A state folder that does not exist yet is made by the daemon in the nearest folder
    that does: fine in a root-owned 0755 one, refused in one others
    may write, sticky or not (anyone could make it there first)."""
    home = tmp_path / "var"
    home.mkdir(mode=0o755)
    state = home / "lib" / "spotwatch"
    config = config_in(tmp_path / "etc", f"state_dir: {state}\npoll_interval: 100ms\n")
    assert load_config(str(config), env={}, check_permissions=True).state_dir == str(state)
    home.chmod(0o1777)
    [problem] = problems(config)
    assert problem.startswith(f"state_dir: {home}: folder must be owned by root")
