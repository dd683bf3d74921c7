"""Load and validate the workflow configuration against workflow/schemas/config.schema.yaml.

Validation runs before any work: a wrong key, type or value stops the run with a message that names the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vb2p.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        names = ", ".join(f"{where}.{key}" if where != "<top level>" else key for key in unknown)
        return f"unknown config key {names}; allowed here: {allowed}"
    if error.validator == "pattern":
        return f"config key {where}: {error.instance!r} is not valid ({error.schema.get('description', 'expected pattern ' + error.schema['pattern'])})"
    return f"config key {where}: {error.message}"


def _fill_defaults(schema: dict, instance: Any) -> None:
    """Set schema defaults for missing object keys, recursively (only where the parent object exists)."""
    if not isinstance(instance, dict):
        return
    for key, subschema in schema.get("properties", {}).items():
        if key not in instance and "default" in subschema:
            instance[key] = copy.deepcopy(subschema["default"])
        if key in instance:
            _fill_defaults(subschema, instance[key])


def validate_config(config: dict) -> dict:
    """Return the config with defaults filled in, or raise ConfigError naming every offending key."""
    schema = load_schema()
    config = copy.deepcopy(config or {})
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    _fill_defaults(schema, config)
    return config


def load_config(*paths: str | Path) -> dict:
    """Merge YAML files in order (later keys win, as Snakemake merges --configfile) and validate."""
    merged: dict = {}
    for path in paths:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
        merged = _merge(merged, loaded)
    return validate_config(merged)


def _merge(base: dict, update: dict) -> dict:
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result
