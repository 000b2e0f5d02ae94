"""Loading the effective config: CONTRACT §2's keys, checks, layers and the permission rule."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import pytest
import yaml

from spotwatch.config.errors import ConfigError
from spotwatch.config.load import config_to_dict, load_config, load_config_report
from spotwatch.config.schema import (
    DEFAULT_CONFIG_PATH,
    Config,
    EcsSettings,
    HibernateSettings,
    HookSpec,
    ImdsSettings,
    InstanceSettings,
    LogSettings,
    MetricsSettings,
    RebalanceSettings,
    WebhookSettings,
)

FULL_CONFIG = """
poll_interval: 2s
deadline_margin: 15s
dry_run: true
state_dir: /srv/spotwatch/state
imds:
  endpoint: http://127.0.0.1:1338
  timeout: 500ms
  token_ttl: 1h
  allow_imdsv1: true
  user_data: false
rebalance:
  enabled: false
hooks:
  - name: checkpoint
    command: ["/usr/local/bin/checkpoint", "--fast"]
    actions: [terminate, stop, hibernate]
    timeout: 90s
    order: -1
    user: 1000
    env: {BUCKET: my-bucket, RETRIES: 3, VERBOSE: true}
  - name: say.goodbye_2
    command: "logger goodbye && sync"
ecs:
  enabled: true
  agent_url: http://127.0.0.1:51679
  region: eu-west-1
  drain: false
  stop: all
  final_stop: false
  stop_timeout: 1m
  stop_reason: "{action} notice, ends {time}"
instance:
  after_response: hibernate
  after_rebalance: terminate
hibernate:
  trigger: command
  command: "systemctl hibernate --force"
  budget: 20s
log:
  level: debug
  format: json
metrics:
  textfile: /var/lib/node_exporter/spotwatch.prom
  listen: "127.0.0.1:9464"
webhook:
  url: https://hooks.example.com/spot
  headers: {Authorization: Bearer abc, X-Count: 1}
  timeout: 2s
  retries: 0
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(
    config_file: Optional[Path],
    env: Optional[Mapping[str, str]] = None,
    **kwargs: Any,
) -> Config:
    """load_config with no stray environment and no permission rule unless asked."""
    kwargs.setdefault("check_permissions", False)
    path = str(config_file) if config_file else None
    return load_config(path, env=env or {}, **kwargs)


def problems_of(config_file: Path, text: str, **kwargs: Any) -> List[str]:
    write(config_file, text)
    with pytest.raises(ConfigError) as caught:
        load(config_file, **kwargs)
    return caught.value.problems


# --- every key ----------------------------------------------------------------------


def test_full_example_loads_to_the_expected_dataclasses(tmp_path: Path) -> None:
    """Every key of §2, set away from its default, arrives typed: seconds, tuples, strings."""
    config = load(write(tmp_path / "config.yaml", FULL_CONFIG))
    assert config == Config(
        poll_interval=2.0,
        deadline_margin=15.0,
        dry_run=True,
        state_dir="/srv/spotwatch/state",
        imds=ImdsSettings(
            endpoint="http://127.0.0.1:1338",
            timeout=0.5,
            token_ttl=3600.0,
            allow_imdsv1=True,
            user_data=False,
        ),
        rebalance=RebalanceSettings(enabled=False),
        hooks=(
            HookSpec(
                name="checkpoint",
                command=("/usr/local/bin/checkpoint", "--fast"),
                actions=("terminate", "stop", "hibernate"),
                timeout=90.0,
                order=-1,
                user=1000,
                env={"BUCKET": "my-bucket", "RETRIES": "3", "VERBOSE": "true"},
            ),
            HookSpec(name="say.goodbye_2", command="logger goodbye && sync"),
        ),
        ecs=EcsSettings(
            enabled=True,
            agent_url="http://127.0.0.1:51679",
            region="eu-west-1",
            drain=False,
            stop="all",
            final_stop=False,
            stop_timeout=60.0,
            stop_reason="{action} notice, ends {time}",
        ),
        instance=InstanceSettings(after_response="hibernate", after_rebalance="terminate"),
        hibernate=HibernateSettings(
            trigger="command", command="systemctl hibernate --force", budget=20.0
        ),
        log=LogSettings(level="debug", format="json"),
        metrics=MetricsSettings(
            textfile="/var/lib/node_exporter/spotwatch.prom", listen="127.0.0.1:9464"
        ),
        webhook=WebhookSettings(
            url="https://hooks.example.com/spot",
            headers={"Authorization": "Bearer abc", "X-Count": "1"},
            timeout=2.0,
            retries=0,
        ),
        sources=("defaults", str(tmp_path / "config.yaml")),
    )


# CONTRACT's YAML blocks by the section they stand in: §2's is what was built first, the
# later sections' list keys being added. A section joins LANDED when its keys are built.
LANDED_SECTIONS = ("2", "4", "7", "8", "10")


def contract_path() -> Path:
    """CONTRACT.md beside the main checkout; a worktree finds that through git's common
    directory."""
    here = Path(__file__).resolve().parents[2]
    found = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True,
        text=True,
    )
    checkouts = [here] + ([Path(found.stdout.strip()).parent] if found.returncode == 0 else [])
    candidates = [(checkout / "../shared/CONTRACT.md").resolve() for checkout in checkouts]
    return next((c for c in candidates if c.exists()), candidates[0])


def contract_blocks(text: str) -> Dict[str, List[Any]]:
    """Each section's YAML blocks, parsed, by section number."""
    found: Dict[str, List[Any]] = {}
    for section in re.split(r"^## (?=\d+\. )", text, flags=re.MULTILINE)[1:]:
        number = section.split(".", 1)[0]
        blocks = [part.split("```", 1)[0] for part in section.split("```yaml\n")[1:]]
        found[number] = [yaml.safe_load(block) for block in blocks]
    return found


def test_contract_example_is_valid_and_equals_the_defaults(tmp_path: Path) -> None:
    """The example block of CONTRACT §2 (minus its sample hook) and those of every later
    section whose keys are built spell out the defaults: each is valid, and together they are
    the built-in layer."""
    contract = contract_path()
    if not contract.exists():
        pytest.skip(f"{contract} not present in this checkout")
    sections = contract_blocks(contract.read_text())
    base, *rest = sections["2"]
    assert rest == [], "§2 has one YAML block"
    del base["hooks"]
    config = load(write(tmp_path / "config.yaml", yaml.safe_dump(base)))
    assert config == Config(sources=config.sources)
    for number in LANDED_SECTIONS[1:]:
        assert sections.get(number), f"§{number} has no YAML block"
        for index, added in enumerate(sections[number]):
            assert "hooks" not in added
            name = f"50-section-{int(number):02d}-{index}.yaml"
            drop_in = write(tmp_path / "conf.d" / name, yaml.safe_dump(added))
            config = load(tmp_path / "config.yaml")
            assert config.sources[-1] == str(drop_in)
            assert config == Config(sources=config.sources), f"§{number} block {index}"


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    """An empty or comment-only file is an empty mapping: all defaults."""
    config = load(write(tmp_path / "config.yaml", "# nothing here yet\n"))
    assert config == Config(sources=("defaults", str(tmp_path / "config.yaml")))


def test_hook_defaults(tmp_path: Path) -> None:
    """A hook needs only name and command: actions [terminate, stop, shutdown], 60 s, order 0,
    root."""
    config = load(write(tmp_path / "c.yaml", "hooks:\n  - {name: h, command: [/bin/true]}\n"))
    assert config.hooks == (HookSpec(name="h", command=("/bin/true",)),)
    assert config.hooks[0].actions == ("terminate", "stop", "shutdown")
    assert config.hooks[0].timeout == 60.0


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("poll_interval: soon", "poll_interval", 'expected a duration like "30s", got "soon"'),
        ("poll_interval: 0", "poll_interval", "> 0"),
        ("deadline_margin: -1s", "deadline_margin", "non-negative"),
        ("dry_run: 'yes'", "dry_run", "expected true or false"),
        ("state_dir: var/lib", "state_dir", "absolute path"),
        ("imds: {timeout: 0s}", "imds.timeout", "> 0"),
        ("imds: {token_ttl: 500ms}", "imds.token_ttl", "between 1s and 6h"),
        ("imds: {token_ttl: 7h}", "imds.token_ttl", "between 1s and 6h"),
        ("imds: {endpoint: 169.254.169.254}", "imds.endpoint", "http"),
        ("imds: {endpoint: 'http://h/latest'}", "imds.endpoint", "no path"),
        ("imds: {endpoint: 'https://169.254.169.254'}", "imds.endpoint", "IMDS has no TLS"),
        ("imds: {endpoint: 'http://h:99999'}", "imds.endpoint", "not a valid URL"),
        ("imds: {allow_imdsv1: 1}", "imds.allow_imdsv1", "true or false"),
        ("imds: {user_data: 'true'}", "imds.user_data", "true or false"),
        ("rebalance: {enabled: on_demand}", "rebalance.enabled", "true or false"),
        ("rebalance: []", "rebalance", "expected a mapping"),
        ("hooks: {name: x}", "hooks", "expected a list"),
        ("hooks: [x]", "hooks[0]", "expected a mapping"),
        ("hooks: [{command: x}]", "hooks[0].name", "required"),
        ("hooks: [{name: x}]", "hooks[0].command", "required"),
        ("hooks: [{name: 'a b', command: x}]", "hooks[0].name", "letters, digits"),
        ("hooks: [{name: x, command: []}]", "hooks[0].command", "non-empty"),
        ("hooks: [{name: x, command: ''}]", "hooks[0].command", "non-empty"),
        ("hooks: [{name: x, command: [ls, 1]}]", "hooks[0].command", "strings"),
        ("hooks: [{name: x, command: x, actions: []}]", "hooks[0].actions", "non-empty"),
        ("hooks: [{name: x, command: x, actions: [reboots]}]", "hooks[0].actions[0]", "reboots"),
        ("hooks: [{name: x, command: x, actions: [stop, stop]}]", "hooks[0].actions[1]", "twice"),
        ("hooks: [{name: x, command: x, timeout: soon}]", "hooks[0].timeout", "duration"),
        ("hooks: [{name: x, command: x, timeout: 0}]", "hooks[0].timeout", "> 0"),
        ("hooks: [{name: x, command: x, order: first}]", "hooks[0].order", "integer"),
        ("hooks: [{name: x, command: x, order: 1.5}]", "hooks[0].order", "integer"),
        ("hooks: [{name: x, command: x, user: -1}]", "hooks[0].user", "uid >= 0"),
        ("hooks: [{name: x, command: x, user: true}]", "hooks[0].user", "user name"),
        ("hooks: [{name: x, command: x, env: [A]}]", "hooks[0].env", "mapping"),
        ("hooks: [{name: x, command: x, env: {1A: x}}]", "hooks[0].env.1A", "variable name"),
        ("hooks: [{name: x, command: x, env: {A: [1]}}]", "hooks[0].env.A", "string"),
        ("hooks: [{name: x, command: x, env: {A: null}}]", "hooks[0].env.A", "string"),
        (
            "hooks: [{name: x, command: x, env: {SPOTWATCH_ACTION: x}}]",
            "hooks[0].env.SPOTWATCH_ACTION",
            "set by spotwatch",
        ),
        ("ecs: {enabled: maybe}", "ecs.enabled", "auto"),
        ("ecs: {enabled: 'true'}", "ecs.enabled", "auto"),
        ("ecs: {agent_url: localhost:51678}", "ecs.agent_url", "URL"),
        ("ecs: {region: 5}", "ecs.region", "string"),
        ("ecs: {drain: no_thanks}", "ecs.drain", "true or false"),
        ("ecs: {stop: some}", "ecs.stop", "none | standalone | all"),
        ("ecs: {final_stop: 0}", "ecs.final_stop", "true or false"),
        ("ecs: {stop_timeout: -5s}", "ecs.stop_timeout", "non-negative"),
        ("ecs: {stop_reason: 'at {when}'}", "ecs.stop_reason", "{when}"),
        ("ecs: {stop_reason: 'at {}'}", "ecs.stop_reason", "only {action} and {time}"),
        ("ecs: {stop_reason: 'at {time'}", "ecs.stop_reason", "template"),
        ("instance: {after_response: reboot}", "instance.after_response", "hibernate"),
        ("instance: {after_rebalance: hibernate}", "instance.after_rebalance", "none | stop"),
        ("hibernate: {trigger: always}", "hibernate.trigger", "auto | command | none"),
        ("hibernate: {command: []}", "hibernate.command", "non-empty"),
        ("hibernate: {budget: 0}", "hibernate.budget", "> 0"),
        ("shutdown: {enabled: 'yes'}", "shutdown.enabled", "true | false | auto"),
        ("shutdown: {budget: 0}", "shutdown.budget", "> 0"),
        ("shutdown: {budget: soon}", "shutdown.budget", "duration"),
        ("shutdown: {budgett: 1m}", "shutdown.budgett", 'unknown key (did you mean "budget"?)'),
        ("log: {level: loud}", "log.level", "debug | info | warning | error"),
        ("log: {format: xml}", "log.format", "auto | journal | json | text"),
        ("metrics: {textfile: metrics.prom}", "metrics.textfile", "absolute path"),
        ("metrics: {listen: 9464}", "metrics.listen", "host:port"),
        ("metrics: {listen: 'localhost:0'}", "metrics.listen", "1..65535"),
        ("metrics: {listen: 'localhost:65536'}", "metrics.listen", "1..65535"),
        ("webhook: {url: 'ftp://example.com'}", "webhook.url", "http"),
        # A key that is no header name may be a token pasted there: not shown (CONTRACT §6).
        (
            "webhook: {headers: {'Bad Header': x}}",
            "webhook.headers.<a key not shown: it may hold a secret>",
            "header name",
        ),
        ("webhook: {headers: {X-A: {b: c}}}", "webhook.headers.X-A", "string"),
        ("webhook: {timeout: 0}", "webhook.timeout", "> 0"),
        ("webhook: {retries: -1}", "webhook.retries", ">= 0"),
        ("webhook: {retries: three}", "webhook.retries", "integer"),
    ],
)
def test_each_bad_value_names_its_key_path(
    tmp_path: Path, text: str, path: str, message: str
) -> None:
    """One problem, reading `<file>: <key.path>: <message>`."""
    config_file = tmp_path / "config.yaml"
    problems = problems_of(config_file, text)
    assert len(problems) == 1, problems
    prefix = f"{config_file}: {path}: "
    assert problems[0].startswith(prefix), problems
    assert message in problems[0][len(prefix) :]


@pytest.mark.parametrize("level", ["DEBUG", "Warning"])
def test_log_level_ignores_case(tmp_path: Path, level: str) -> None:
    """INFO and info are the same level; the loaded value is lower case."""
    config = load(write(tmp_path / "c.yaml", f"log: {{level: {level}}}"))
    assert config.log.level == level.lower()


def test_real_yaml_booleans_are_accepted(tmp_path: Path) -> None:
    """YAML 1.1 booleans (yes/no/on/off unquoted) are booleans; ecs.enabled takes auto too."""
    config = load(write(tmp_path / "c.yaml", "dry_run: yes\necs: {enabled: off}\n"))
    assert config.dry_run is True
    assert config.ecs.enabled is False


def test_endpoint_with_trailing_slash_and_ipv6_is_accepted(tmp_path: Path) -> None:
    """The IPv6 IMDS endpoint works; a trailing slash is dropped so paths join cleanly."""
    config = load(write(tmp_path / "c.yaml", "imds: {endpoint: 'http://[fd00:ec2::254]/'}\n"))
    assert config.imds.endpoint == "http://[fd00:ec2::254]"


def test_user_may_be_a_name_or_a_uid(tmp_path: Path) -> None:
    """hooks[].user: a user name, a numeric uid, or null for root."""
    text = """
hooks:
  - {name: a, command: x, user: nobody}
  - {name: b, command: x, user: 0}
  - {name: c, command: x, user: null}
"""
    config = load(write(tmp_path / "c.yaml", text))
    assert [hook.user for hook in config.hooks] == ["nobody", 0, None]


# --- problems are collected, named and helpful --------------------------------------


def test_all_problems_of_a_file_are_reported_together(tmp_path: Path) -> None:
    """Every problem comes out in one go, not one per run."""
    text = """
poll_interval: soon
imds: {timeout: 0}
hooks:
  - {name: a, command: x}
  - {name: b, command: x, timeout: soon}
log: {level: loud}
"""
    problems = problems_of(tmp_path / "c.yaml", text)
    paths = [problem.split(": ")[1] for problem in problems]
    assert paths == ["poll_interval", "imds.timeout", "hooks[1].timeout", "log.level"]
    assert str(ConfigError(problems)).splitlines() == problems


def test_problems_across_files_are_all_reported(tmp_path: Path) -> None:
    """The config file and conf.d files are all checked before giving up."""
    config_file = write(tmp_path / "config.yaml", "poll_interval: soon\n")
    write(tmp_path / "conf.d" / "10-x.yaml", "hooks: [{command: x}]\n")
    with pytest.raises(ConfigError) as caught:
        load(config_file)
    assert caught.value.problems == [
        f'{config_file}: poll_interval: expected a duration like "30s", got "soon"',
        f"{tmp_path / 'conf.d' / '10-x.yaml'}: hooks[0].name: required",
    ]


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    """A typo names its full key path and the closest known key."""
    text = """
pol_interval: 5s
imds: {tokn_ttl: 6h}
hooks: [{name: x, command: x, timout: 5s}]
webhook: {retry: 1}
frobnicate: true
"""
    problems = problems_of(tmp_path / "c.yaml", text)
    assert [p.split(": ", 1)[1] for p in problems] == [
        'pol_interval: unknown key (did you mean "poll_interval"?)',
        'imds.tokn_ttl: unknown key (did you mean "token_ttl"?)',
        'hooks[0].timout: unknown key (did you mean "timeout"?)',
        'webhook.retry: unknown key (did you mean "retries"?)',
        "frobnicate: unknown key",
    ]


def test_duplicate_hook_names_are_errors(tmp_path: Path) -> None:
    """Hook names are unique; the problem points at the second and names the first."""
    text = "hooks:\n  - {name: a, command: x}\n  - {name: a, command: y}\n"
    (problem,) = problems_of(tmp_path / "c.yaml", text)
    assert problem.endswith('hooks[1].name: duplicate name "a" (also hooks[0])')


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A YAML syntax error is a config error with the file and the line."""
    config_file = tmp_path / "c.yaml"
    (problem,) = problems_of(config_file, "poll_interval: 5s\nimds:\n  timeout: [1s\n")
    assert problem.startswith(f"{config_file}: line ")
    assert "YAML" in problem


DEEP_DOCUMENTS = {
    "3000 brackets": "[" * 3000,
    "hooks nested 1500 deep": "hooks:\n" + "".join("  " * i + "-\n" for i in range(1500)),
}


@pytest.mark.parametrize("text", DEEP_DOCUMENTS.values(), ids=DEEP_DOCUMENTS.keys())
def test_a_deeply_nested_document_is_a_config_error_naming_the_file(
    tmp_path: Path, text: str
) -> None:
    """Nesting past 64 levels is refused before PyYAML builds the document (which recurses:
    before the fix this was a RecursionError traceback from yaml.safe_load)."""
    config_file = tmp_path / "c.yaml"
    (problem,) = problems_of(config_file, text)
    assert problem.startswith(f"{config_file}: line ")
    assert problem.endswith(": YAML document: nested deeper than 64 levels")


def test_a_deeply_nested_user_data_section_is_reported_and_ignored(tmp_path: Path) -> None:
    """User data nested too deep is reported and ignored; the file config stays in force."""
    config_file = write(tmp_path / "c.yaml", "poll_interval: 3s\n")
    raw = b"#spotwatch-config\nhooks:\n" + b"".join(b"  " * i + b"-\n" for i in range(1500))
    report = load_config_report(str(config_file), env={}, user_data=raw, check_permissions=False)
    assert report.config.poll_interval == 3.0
    assert report.user_data_note == (
        "#spotwatch-config user data is nested deeper than 64 levels at line 66; ignored"
    )


@pytest.mark.parametrize("text", ["- a\n- b\n", "just words\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    """A file whose top level is not a mapping is an error naming the file."""
    config_file = tmp_path / "c.yaml"
    (problem,) = problems_of(config_file, text)
    assert problem.startswith(f"{config_file}: expected a mapping")


# --- which files -------------------------------------------------------------------


def test_missing_default_file_means_all_defaults() -> None:
    """No /etc/spotwatch/config.yaml and no SPOTWATCH_CONFIG: built-in defaults."""
    if os.path.exists(DEFAULT_CONFIG_PATH) or os.path.exists("/etc/spotwatch/conf.d"):
        pytest.skip("this machine has a real /etc/spotwatch config")
    assert load(None) == Config()


def test_missing_file_named_by_path_is_an_error(tmp_path: Path) -> None:
    """A config file named with -c must exist."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load(missing)


def test_missing_file_named_by_env_is_an_error(tmp_path: Path) -> None:
    """A config file named by $SPOTWATCH_CONFIG must exist."""
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load(None, env={"SPOTWATCH_CONFIG": str(tmp_path / "nope.yaml")})


def test_spotwatch_config_env_names_the_file(tmp_path: Path) -> None:
    """$SPOTWATCH_CONFIG is used when no path is given; an explicit path beats it."""
    by_env = write(tmp_path / "env.yaml", "poll_interval: 3s\n")
    by_arg = write(tmp_path / "arg.yaml", "poll_interval: 4s\n")
    env = {"SPOTWATCH_CONFIG": str(by_env)}
    assert load(None, env=env).poll_interval == 3.0
    assert load(by_arg, env=env).poll_interval == 4.0


def test_confd_next_to_the_config_file_is_used_by_default(tmp_path: Path) -> None:
    """For -c DIR/config.yaml, drop-ins come from DIR/conf.d (not /etc's)."""
    config_file = write(tmp_path / "config.yaml", "poll_interval: 3s\n")
    write(tmp_path / "conf.d" / "a.yaml", "poll_interval: 4s\n")
    config = load(config_file)
    assert config.poll_interval == 4.0
    assert config.sources == ("defaults", str(config_file), str(tmp_path / "conf.d" / "a.yaml"))


def test_confd_dir_argument_wins(tmp_path: Path) -> None:
    """confd_dir= overrides where drop-ins come from."""
    config_file = write(tmp_path / "config.yaml", "")
    write(tmp_path / "conf.d" / "a.yaml", "poll_interval: 4s\n")
    write(tmp_path / "other" / "a.yaml", "poll_interval: 7s\n")
    assert load(config_file, confd_dir=str(tmp_path / "other")).poll_interval == 7.0


def test_only_yaml_files_in_confd_count(tmp_path: Path) -> None:
    """Backups, .yml, disabled and hidden files in conf.d are not read."""
    config_file = write(tmp_path / "config.yaml", "")
    for name in ("a.yaml~", "b.yml", "c.yaml.disabled", ".d.yaml", "README"):
        write(tmp_path / "conf.d" / name, "not: [valid")
    assert load(config_file).poll_interval == 5.0


# --- layering ----------------------------------------------------------------------


def cloud_config(section: str) -> bytes:
    indented = "".join(f"  {line}\n" for line in section.splitlines())
    return f"#cloud-config\nspotwatch:\n{indented}".encode()


def test_layers_apply_in_order_file_confd_user_data_env(tmp_path: Path) -> None:
    """Later wins: file < conf.d (name order) < user data < environment."""
    config_file = write(
        tmp_path / "config.yaml",
        "poll_interval: 1s\ndeadline_margin: 1s\nstate_dir: /file\nlog: {level: error}\n"
        "webhook: {retries: 1}\n",
    )
    write(tmp_path / "conf.d" / "20-b.yaml", "deadline_margin: 3s\nstate_dir: /b\n")
    write(
        tmp_path / "conf.d" / "10-a.yaml",
        "deadline_margin: 2s\nstate_dir: /a\nlog: {level: warning}\n",
    )
    user_data = cloud_config("state_dir: /user-data\nlog: {level: info}\n")
    env = {"SPOTWATCH_LOG_LEVEL": "debug"}
    config = load(config_file, env=env, user_data=user_data)
    assert config.poll_interval == 1.0  # only the file set it
    assert config.webhook.retries == 1  # ditto, one level down
    assert config.deadline_margin == 3.0  # 20-b.yaml comes after 10-a.yaml
    assert config.state_dir == "/user-data"  # user data beats conf.d
    assert config.log.level == "debug"  # env beats user data
    assert config.sources == (
        "defaults",
        str(config_file),
        str(tmp_path / "conf.d" / "10-a.yaml"),
        str(tmp_path / "conf.d" / "20-b.yaml"),
        "user-data",
        "env SPOTWATCH_LOG_LEVEL",
    )


def test_mappings_merge_deep(tmp_path: Path) -> None:
    """A later layer setting one key of a section keeps the section's other keys."""
    config_file = write(tmp_path / "config.yaml", "ecs: {stop: all, drain: false}\n")
    write(tmp_path / "conf.d" / "a.yaml", "ecs: {stop: none}\n")
    config = load(config_file)
    assert (config.ecs.stop, config.ecs.drain) == ("none", False)


def test_lists_from_later_layers_replace(tmp_path: Path) -> None:
    """Hooks (and commands) from a later layer replace the earlier list; they don't append."""
    config_file = write(
        tmp_path / "config.yaml",
        "hooks: [{name: a, command: x}, {name: b, command: x}]\n"
        "hibernate: {command: [systemctl, hibernate, --now]}\n",
    )
    write(tmp_path / "conf.d" / "a.yaml", "hooks: [{name: c, command: [y]}]\n")
    user_data = cloud_config("hibernate: {command: [/sbin/hibernate]}\n")
    config = load(config_file, user_data=user_data)
    assert [hook.name for hook in config.hooks] == ["c"]
    assert config.hibernate.command == ("/sbin/hibernate",)


def test_user_data_is_not_read_when_imds_user_data_is_false(tmp_path: Path) -> None:
    """imds.user_data: false in the files keeps user data out entirely."""
    config_file = write(tmp_path / "config.yaml", "imds: {user_data: false}\n")
    report = load_config_report(
        str(config_file), env={}, user_data=cloud_config("dry_run: true"), check_permissions=False
    )
    assert report.config.dry_run is False
    assert "user-data" not in report.config.sources
    assert "imds.user_data is false" in report.user_data_note


USER_DATA_VARIANTS = {
    "cloud-config": cloud_config("dry_run: true"),
    "spotwatch-config": b"#spotwatch-config\ndry_run: true\n",
    "gzip cloud-config": gzip.compress(cloud_config("dry_run: true")),
    "gzip spotwatch-config": gzip.compress(b"#spotwatch-config\ndry_run: true\n"),
}


@pytest.mark.parametrize("raw", USER_DATA_VARIANTS.values(), ids=USER_DATA_VARIANTS.keys())
def test_user_data_variants_form_a_layer(tmp_path: Path, raw: bytes) -> None:
    """Each accepted user-data form contributes its settings as the user-data layer."""
    config = load(write(tmp_path / "c.yaml", ""), user_data=raw)
    assert config.dry_run is True
    assert config.sources[-1] == "user-data"


def test_user_data_in_a_mime_archive_forms_a_layer(tmp_path: Path) -> None:
    """A cloud-init MIME archive (script + base64 cloud-config) feeds the layer too."""
    archive = MIMEMultipart()
    archive.attach(MIMEText("#!/bin/sh\necho hi\n", "x-shellscript"))
    archive.attach(MIMEText(cloud_config("dry_run: true").decode(), "cloud-config", "utf-8"))
    config = load(write(tmp_path / "c.yaml", ""), user_data=archive.as_bytes())
    assert config.dry_run is True


def test_shell_script_user_data_is_ignored(tmp_path: Path) -> None:
    """User data that isn't for spotwatch leaves the config alone, with a note why."""
    report = load_config_report(
        str(write(tmp_path / "c.yaml", "poll_interval: 3s\n")),
        env={},
        user_data=b"#!/bin/bash\nyum -y update\n",
        check_permissions=False,
    )
    assert report.config.poll_interval == 3.0
    assert report.user_data_problems == []
    assert "script" in report.user_data_note


def test_invalid_user_data_section_is_dropped_and_reported(tmp_path: Path) -> None:
    """A bad user-data section is not fatal: file config stays, problems are returned."""
    config_file = write(tmp_path / "c.yaml", "poll_interval: 3s\nhooks: [{name: a, command: x}]\n")
    user_data = cloud_config("poll_interval: 1s\nhooks: [{name: b}]\nsecret_tokn: hunter2\n")
    report = load_config_report(
        str(config_file), env={}, user_data=user_data, check_permissions=False
    )
    assert report.config.poll_interval == 3.0  # the valid part of user data is not used either
    assert [hook.name for hook in report.config.hooks] == ["a"]
    assert report.user_data_problems == [
        "user-data: hooks[0].command: required (or preset: NAME)",
        "user-data: secret_tokn: unknown key",
    ]
    assert report.config.sources[-1] == "user-data (ignored: 2 problems)"
    assert all("hunter2" not in problem for problem in report.user_data_problems)


def test_file_problems_are_fatal_even_with_good_user_data(tmp_path: Path) -> None:
    """User data cannot paper over a broken file: the file is checked first."""
    config_file = write(tmp_path / "c.yaml", "poll_interval: soon\n")
    with pytest.raises(ConfigError, match="poll_interval"):
        load(config_file, user_data=cloud_config("poll_interval: 1s"))


# --- environment -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "attribute", "expected"),
    [
        ({"SPOTWATCH_POLL_INTERVAL": "2s"}, "poll_interval", 2.0),
        ({"SPOTWATCH_POLL_INTERVAL": "7"}, "poll_interval", 7.0),
        ({"SPOTWATCH_DRY_RUN": "1"}, "dry_run", True),
        ({"SPOTWATCH_DRY_RUN": "yes"}, "dry_run", True),
        ({"SPOTWATCH_DRY_RUN": "TRUE"}, "dry_run", True),
        ({"SPOTWATCH_DRY_RUN": "0"}, "dry_run", False),
        ({"SPOTWATCH_DRY_RUN": "no"}, "dry_run", False),
        ({"SPOTWATCH_DRY_RUN": "false"}, "dry_run", False),
    ],
)
def test_environment_overrides(
    tmp_path: Path, env: Dict[str, str], attribute: str, expected: object
) -> None:
    """Environment variables beat every file; booleans there may be 1/0/yes/no/true/false."""
    config_file = write(tmp_path / "c.yaml", "poll_interval: 9s\ndry_run: true\n")
    assert getattr(load(config_file, env=env), attribute) == expected


def test_environment_sets_log_level_and_imds_endpoint(tmp_path: Path) -> None:
    """SPOTWATCH_LOG_LEVEL and AWS_EC2_METADATA_SERVICE_ENDPOINT set log.level / imds.endpoint."""
    env = {
        "SPOTWATCH_LOG_LEVEL": "WARNING",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:8111/",
    }
    config = load(write(tmp_path / "c.yaml", "imds: {timeout: 2s}\n"), env=env)
    assert config.log.level == "warning"
    assert config.imds == ImdsSettings(endpoint="http://127.0.0.1:8111", timeout=2.0)


def test_empty_environment_variables_count_as_unset(tmp_path: Path) -> None:
    """`Environment=SPOTWATCH_DRY_RUN=` in a unit clears the override; it isn't an error."""
    config = load(write(tmp_path / "c.yaml", ""), env={"SPOTWATCH_DRY_RUN": ""})
    assert config.dry_run is False


def test_bad_environment_values_name_the_variable(tmp_path: Path) -> None:
    """Each bad variable is one problem naming the variable, all reported together."""
    env = {
        "SPOTWATCH_POLL_INTERVAL": "soon",
        "SPOTWATCH_DRY_RUN": "maybe",
        "SPOTWATCH_LOG_LEVEL": "loud",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": "169.254.169.254",
    }
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path / "c.yaml", ""), env=env)
    assert [problem.split(":")[0] for problem in caught.value.problems] == list(env)
    assert caught.value.problems[0] == (
        'SPOTWATCH_POLL_INTERVAL: expected a duration like "30s", got "soon"'
    )


def test_an_https_imds_endpoint_from_the_environment_is_a_config_error(tmp_path: Path) -> None:
    """IMDS has no TLS: https is refused while loading (exit 78), not at the first poll with
    a traceback (exit 1, a restart loop under systemd)."""
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": "https://169.254.169.254"}
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path / "c.yaml", ""), env=env)
    assert caught.value.problems == [
        'AWS_EC2_METADATA_SERVICE_ENDPOINT: expected http:// (IMDS has no TLS), '
        'got "https://169.254.169.254"'
    ]


def test_poll_interval_from_environment_must_be_positive(tmp_path: Path) -> None:
    """The environment is held to the same ranges as files."""
    with pytest.raises(ConfigError, match="SPOTWATCH_POLL_INTERVAL: must be > 0s"):
        load(write(tmp_path / "c.yaml", ""), env={"SPOTWATCH_POLL_INTERVAL": "0"})


# --- permissions -------------------------------------------------------------------

PERMISSION_PROBLEM = "must be owned by root and not writable by group or others (hooks run as root)"


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_group_or_world_writable_config_is_refused(tmp_path: Path, mode: int) -> None:
    """Anyone who can write the config can run commands as root through hooks."""
    config_file = write(tmp_path / "c.yaml", "")
    config_file.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load(config_file, check_permissions=True)
    assert caught.value.problems == [f"{config_file}: {PERMISSION_PROBLEM}"]


def test_writable_confd_file_is_refused(tmp_path: Path) -> None:
    """conf.d files are held to the same rule as the config file."""
    config_file = write(tmp_path / "c.yaml", "")
    config_file.chmod(0o644)
    drop_in = write(tmp_path / "conf.d" / "a.yaml", "")
    drop_in.chmod(0o666)
    with pytest.raises(ConfigError) as caught:
        load(config_file, check_permissions=True)
    assert caught.value.problems[-1] == f"{drop_in}: {PERMISSION_PROBLEM}"


def test_permissions_are_not_checked_when_asked_not_to(tmp_path: Path) -> None:
    """check_permissions=False (unprivileged runs, tests) skips the rule."""
    config_file = write(tmp_path / "c.yaml", "")
    config_file.chmod(0o666)
    assert load(config_file, check_permissions=False) == Config(
        sources=("defaults", str(config_file))
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_config_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    """A 0644 file owned by another user is refused: that user could edit it."""
    config_file = write(tmp_path / "c.yaml", "")
    config_file.chmod(0o644)
    os.chown(config_file, 1000, 1000)
    with pytest.raises(ConfigError) as caught:
        load(config_file, check_permissions=True)
    assert caught.value.problems == [f"{config_file}: {PERMISSION_PROBLEM}"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can own a file as root")
def test_root_owned_0644_files_pass(tmp_path: Path) -> None:
    """The normal packaged layout (root:root 0644) is accepted, and is the default as root."""
    config_file = write(tmp_path / "c.yaml", "poll_interval: 3s\n")
    config_file.chmod(0o644)
    assert load_config(str(config_file), env={}).poll_interval == 3.0


# --- showing the effective config ---------------------------------------------------


def test_config_to_dict_is_plain_data_with_header_values_redacted(tmp_path: Path) -> None:
    """`check` shows the effective config: seconds, lists, and no secrets from headers."""
    data = config_to_dict(load(write(tmp_path / "c.yaml", FULL_CONFIG)))
    assert data["poll_interval"] == 2.0
    assert data["hooks"][0]["command"] == ["/usr/local/bin/checkpoint", "--fast"]
    assert data["webhook"]["headers"] == {"Authorization": "***", "X-Count": "***"}
    assert "sources" not in data
    assert yaml.safe_load(yaml.safe_dump(data)) == data


def test_config_to_dict_output_is_a_valid_config_file(tmp_path: Path) -> None:
    """The shown config loads back to the same settings (header values aside)."""
    original = load(write(tmp_path / "a.yaml", FULL_CONFIG))
    shown = yaml.safe_dump(config_to_dict(original))
    reloaded = load(write(tmp_path / "b.yaml", shown))
    assert config_to_dict(reloaded) == config_to_dict(original)
