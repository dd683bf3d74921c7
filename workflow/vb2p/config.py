"""Load and validate the workflow configuration against workflow/schemas/config.schema.yaml.

Validation runs before any work: a wrong key, type or value stops the run with a message that names the key. Beyond
JSON Schema, two keywords of our own mark what needs more than a type check, so every key that has them (now and
added later) gets the check: `x-interval` (a [start, end] window: finite, start < end) and `x-path` (a file system
path: `~` and environment variables are expanded, as a shell would). Config files with a key written twice are
refused (YAML would keep the last one silently).
"""

from __future__ import annotations

import copy
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vb2p import layout
from vb2p.errors import ConfigError, SelectionError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
RESULTS_DIR = Path("results")
UNSET_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _interval(validator, enabled, instance, schema):
    numbers = isinstance(instance, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in instance
    )
    if not enabled or not numbers or len(instance) != 2:
        return  # the type and length are reported by the schema's own keywords
    start, end = instance
    if not (math.isfinite(start) and math.isfinite(end)):
        yield jsonschema.ValidationError(f"{instance} must be two finite numbers [start, end]")
    elif start >= end:
        yield jsonschema.ValidationError(f"{instance}: start {start} is not before end {end}; write [start, end]")


Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-interval": _interval})


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


def expand_path(value: str, key: str) -> str:
    """`~` and environment variables expanded; URLs (s3://, http://) are left as they are."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", value) and not value.startswith("file://"):
        return value
    expanded = os.path.expanduser(os.path.expandvars(value))
    unset = UNSET_VARIABLE.findall(expanded)
    if unset:
        raise ConfigError(f"config key {key}: {value!r} uses environment variable(s) {unset} that are not set")
    return expanded


def _expand_paths(schema: dict, instance: Any, where: str = "") -> None:
    if not isinstance(instance, dict):
        return
    for key, subschema in schema.get("properties", {}).items():
        name = f"{where}.{key}" if where else key
        if key in instance and subschema.get("x-path") and isinstance(instance[key], str):
            instance[key] = expand_path(instance[key], name)
        elif key in instance:
            _expand_paths(subschema, instance[key], name)


def _demo_release_url(config: dict) -> None:
    """With `demo`, the release read is the demo written under demo.out: release.url follows it, never disagrees."""
    derived = str(Path(config["demo"]["out"]) / layout.RELEASE_PREFIX)
    given = config["release"]["url"]
    if given in (layout.DEFAULT_RELEASE_URL, derived) or Path(given) == Path(derived):
        config["release"]["url"] = derived
        return
    raise ConfigError(
        f"config keys release.url ({given}) and demo.out ({config['demo']['out']}) disagree: the demo release is "
        f"written to and read from {derived}. Remove release.url from the demo config (it follows demo.out), or "
        "remove `demo` to read another release."
    )


def validate_config(config: dict) -> dict:
    """Return the config with defaults filled in and paths expanded, or raise ConfigError naming the key."""
    schema = load_schema()
    config = copy.deepcopy(config or {})
    errors = sorted(Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    _fill_defaults(schema, config)
    _expand_paths(schema, config)
    if "demo" in config:
        _demo_release_url(config)
    if config["download"]["mode"] == "datasets" and not config["release"]["url"].startswith("s3://"):
        raise ConfigError(
            f"config key download.mode: datasets reads byte ranges of S3 objects, but release.url "
            f"{config['release']['url']} is a local directory; use download.mode: whole (the default) for it"
        )
    from vb2p.responses import ResponseParams
    from vb2p.selection import check_filters

    ResponseParams.from_config(config["responses"])  # what the schema cannot say: the window holds the response window

    try:
        check_filters(config["selection"]["filters"])
    except SelectionError as error:
        raise ConfigError(f"invalid configuration: {error}") from error
    return config


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{loader.name}: key {key!r} is written twice (lines {seen[key] + 1} and "
                f"{key_node.start_mark.line + 1}); YAML would keep only the last one. Keep one."
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_config_file(path: str | Path) -> dict:
    """One YAML config file, refusing duplicate keys and anything but a mapping at the top level."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.load(handle, Loader=_StrictLoader) or {}  # noqa: S506 (a SafeLoader subclass)
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path}: expected keys at the top level, got {type(content).__name__}")
    return content


def load_config(*paths: str | Path) -> dict:
    """Merge YAML files in order (later keys win, as Snakemake merges --configfile) and validate."""
    merged: dict = {}
    for path in paths:
        merged = _merge(merged, read_config_file(path))
    return validate_config(merged)


def _merge(base: dict, update: dict) -> dict:
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def _write_problem(directory: Path) -> str | None:
    """Why files cannot be created in directory (or where it would be created), or None when they can.

    A real probe (a temporary file, removed at once), not os.access: permissions are not the only obstacle (a
    read-only mount, a full disk, /sys), and root passes every permission check.
    """
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".vb2p-write-probe-"):
            pass
    except OSError as error:
        return f"{error.strerror} ({existing})"
    return None


def output_locations(config: dict, results_dir: str | Path = RESULTS_DIR) -> dict[str, Path]:
    """Every place the run writes to, by the name a user looks for: config keys, and the results folders."""
    results_dir = Path(results_dir)
    places = {"cache_dir": Path(config["cache_dir"])}
    if "demo" in config:
        places["demo.out"] = Path(config["demo"]["out"])
    places[f"{results_dir} (the workflow's output folder)"] = results_dir
    if results_dir.is_dir():
        for folder in sorted(p for p in results_dir.iterdir() if p.is_dir()):
            places[str(folder)] = folder
    return places


def check_locations(config: dict, results_dir: str | Path = RESULTS_DIR) -> None:
    """Before any work: every output and cache location can be written, or one error naming each that cannot."""
    problems = []
    for name, path in output_locations(config, results_dir).items():
        problem = _write_problem(Path(path).absolute())
        if problem:
            problems.append(f"{name} = {path}: cannot write there: {problem}")
    if problems:
        raise ConfigError(
            "output locations that cannot be written (choose others, or fix their permissions or free space):\n  "
            + "\n  ".join(problems)
        )
