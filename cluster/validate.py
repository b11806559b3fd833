"""Check a cluster launcher config offline: Ray's own validation, then the few rules Ray does not enforce.

Run before `ray up`: `python cluster/validate.py cluster/config.yaml` (exit 2 and one line naming the problem).
"""

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

# The Ray version the project is tested with; every node must install exactly this one.
RAY_PIN = "2.60.0"
_PINNED_RAY = re.compile(r"ray\[[^\]]*\]==" + re.escape(RAY_PIN))


class ConfigError(ValueError):
    """A config the launcher would reject or run wrongly; the message is one line."""


def _ray_checks(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's own offline validation: fill in the provider's defaults, then its JSON schema and checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        prepared = prepare_config(config)
        validate_config(prepared)
    except Exception as e:  # jsonschema.ValidationError, ValueError, KeyError, click.ClickException (cli_logger.abort)
        message = getattr(e, "message", None) or str(e)
        path = "/".join(str(p) for p in getattr(e, "absolute_path", []))
        raise ConfigError(f"Ray rejects the config{' at ' + path if path else ''}: {message.splitlines()[0]}") from None
    return prepared


def _known_provider_keys() -> set[str]:
    import ray.autoscaler

    schema_path = Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json"
    return set(json.loads(schema_path.read_text())["properties"]["provider"]["properties"])


def _project_checks(raw: dict[str, Any], prepared: dict[str, Any]) -> None:
    """Rules Ray 2.60's validator lets through, each of which we have seen cost a cluster."""
    # Ray's schema allows any provider key, so a typo ("regon") would silently fall back to a default.
    unknown = sorted(set(raw.get("provider", {})) - _known_provider_keys())
    if unknown:
        raise ConfigError(f"provider: unknown key(s) {unknown}; allowed: {sorted(_known_provider_keys())}")
    for name, node_type in prepared["available_node_types"].items():
        lo, hi = node_type.get("min_workers", 0), node_type.get("max_workers", 0)
        if lo > hi:  # Ray checks only the sum of min_workers against the global max_workers
            raise ConfigError(f"available_node_types.{name}: min_workers={lo} > max_workers={hi}")
        # The local provider detects resources per machine; cloud node types must say what they offer,
        # else the autoscaler guesses from the instance type and the head may run trials.
        if raw["provider"]["type"] != "local" and not raw["available_node_types"][name].get("resources"):
            raise ConfigError(f"available_node_types.{name}: `resources` must be given explicitly, e.g. {{CPU: 4, GPU: 1}}")
    installs = " ".join(prepared.get("setup_commands", []))
    if not _PINNED_RAY.search(installs):
        raise ConfigError(f"setup_commands: must install ray[...]=={RAY_PIN} (else the launcher's nightly default is used)")


def validate(path: str | os.PathLike) -> dict[str, Any]:
    """Return the config as `ray up` would use it, or raise ConfigError with a one-line reason."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("provider"), dict):
        raise ConfigError(f"{path}: expected a mapping with a `provider` section")
    prepared = _ray_checks(raw)
    _project_checks(raw, prepared)
    return prepared


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python cluster/validate.py CONFIG.yaml [...]", file=sys.stderr)
        return 2
    for path in argv:
        try:
            validate(path)
        except ConfigError as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
        print(f"{path}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
