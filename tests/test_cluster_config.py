"""The launcher configs pass Ray's own offline validation, and broken copies of them are rejected."""

import copy
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {name: REPO / "cluster" / f"{name}.yaml" for name in ("config", "local")}

_spec = importlib.util.spec_from_file_location("cluster_validate", REPO / "cluster" / "validate.py")
cluster_validate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster_validate)


def _load(name: str) -> dict:
    return yaml.safe_load(CONFIGS[name].read_text())


def _ray_validate(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_passes_ray_and_project_validation(name):
    prepared = _ray_validate(_load(name))
    assert cluster_validate.validate(CONFIGS[name]) == prepared
    commands = " ".join(prepared["setup_commands"] + prepared["head_setup_commands"] + prepared["worker_setup_commands"])
    assert 'ray[default,tune]==2.60.0' in commands
    assert "ray-wheels" not in commands and "dev0" not in commands  # never the launcher's nightly default
    assert "~/tune_adder" in prepared["file_mounts"]  # the repository is synced to every node
    starts = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts  # the dashboard only through `ray dashboard`'s port forward


def test_aws_head_runs_no_trials_and_gpu_workers_scale_from_zero():
    prepared = _ray_validate(_load("config"))
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    workers = [t for name, t in types.items() if name != prepared["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 and t["min_workers"] == 0 for t in workers)
    assert all(0 < t["max_workers"] <= prepared["max_workers"] for t in workers)
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in workers)
    # SSH only: Ray's default group opens 22 and intra-cluster traffic; we add no inbound rules.
    assert "IpPermissions" not in prepared["provider"].get("security_group", {})
    # With no worker up a sweep must wait for the autoscaler rather than refuse (tune_adder.runner).
    assert any("TUNE_ADDER_NODE_WAIT_S=" in c for c in prepared["head_setup_commands"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_no_credentials_and_editable_keys_are_commented(name):
    text = CONFIGS[name].read_text()
    assert not re.search(r"aws_secret|aws_access_key|AKIA[0-9A-Z]{12}|BEGIN [A-Z ]*PRIVATE KEY|password:", text, re.I)
    editable = {
        "config": ["cluster_name", "max_workers", "idle_timeout_minutes", "region", "availability_zone", "InstanceType", "ImageId"],
        "local": ["cluster_name", "head_ip", "worker_ips", "ssh_user", "ssh_private_key", "min_workers", "max_workers"],
    }[name]
    lines = text.splitlines()
    for key in editable:
        hits = [i for i, line in enumerate(lines) if re.match(rf"\s*{key}:", line)]
        assert hits, key
        # The comment sits on the key's line or the line above (the head's fixed 0 workers need none).
        assert any("EDIT" in lines[i] or "EDIT" in lines[i - 1] for i in hits), f"{name}.yaml: {key} has no EDIT comment"


def test_typo_in_a_key_is_rejected_by_ray():
    config = _load("config")
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _ray_validate(config)
    config = _load("config")
    config["available_node_types"]["gpu_worker"]["resource"] = config["available_node_types"]["gpu_worker"].pop("resources")
    with pytest.raises(jsonschema.ValidationError):
        _ray_validate(config)


def test_typo_in_a_provider_key_is_caught_by_the_project_check():
    config = _load("config")
    config["provider"]["regon"] = config["provider"].pop("region")
    _ray_validate(config)  # Ray 2.60 allows any provider key and falls back to us-west-2
    with pytest.raises(cluster_validate.ConfigError, match="regon"):
        cluster_validate._project_checks(config, prepare_config(copy.deepcopy(config)))


def test_missing_resources_is_rejected():
    config = _load("config")
    del config["available_node_types"]["gpu_worker"]["resources"]
    with pytest.raises(jsonschema.ValidationError, match="resources"):
        _ray_validate(config)
    config = _load("config")
    config["available_node_types"]["gpu_worker"]["resources"] = {}  # Ray accepts and guesses; we do not
    prepared = _ray_validate(config)
    with pytest.raises(cluster_validate.ConfigError, match="gpu_worker.*resources"):
        cluster_validate._project_checks(config, prepared)


def test_min_workers_above_max_workers_is_rejected():
    config = _load("config")
    config["available_node_types"]["gpu_worker"].update(min_workers=5, max_workers=4)
    with pytest.raises(ValueError, match="max_workers"):  # Ray: sum of min_workers above the global cap
        _ray_validate(config)
    config = _load("config")
    config["available_node_types"]["gpu_worker"].update(min_workers=3, max_workers=1)
    prepared = _ray_validate(config)  # Ray 2.60 does not compare a node type's own min and max
    with pytest.raises(cluster_validate.ConfigError, match="min_workers=3 > max_workers=1"):
        cluster_validate._project_checks(config, prepared)
    config = _load("local")
    config.update(min_workers=2, max_workers=1)
    with pytest.raises(ValueError, match="max_workers"):
        _ray_validate(config)


def test_unpinned_ray_is_rejected():
    config = _load("config")
    config["setup_commands"] = [c.replace("==2.60.0", "") for c in config["setup_commands"]]
    with pytest.raises(cluster_validate.ConfigError, match="2.60.0"):
        cluster_validate._project_checks(config, _ray_validate(config))


def test_cli_exits_2_with_one_line(tmp_path):
    config = _load("config")
    config["available_node_types"]["gpu_worker"].update(min_workers=3, max_workers=1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, str(REPO / "cluster" / "validate.py"), str(bad)], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "min_workers=3 > max_workers=1" in run.stderr
    ok = subprocess.run([sys.executable, str(REPO / "cluster" / "validate.py"), *map(str, CONFIGS.values())], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_flags_named_in_comments_exist(name):
    """A comment may only name a flag the sweep has, or one the config's own commands use (ray start ...)."""
    from ray.scripts.scripts import start

    from tune_adder.sweep import build_parser

    text = CONFIGS[name].read_text()
    comments = " ".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    commands = " ".join(line.split("#", 1)[0] for line in text.splitlines())
    ray_start = {o for p in start.params for o in p.opts}
    known = set(build_parser()._option_string_actions) | ray_start | set(re.findall(r"--[a-z][a-z-]*", commands))
    assert sorted(set(re.findall(r"--[a-z][a-z-]*", comments)) - known) == []
