"""Config validation with messages that name the key, and the schema's defaults.

The bottom of the package: it imports nothing of ours. The registries complete the schema (their enums
and their items' own keys) through :func:`load_schema`'s ``extensions``, which only the composition root,
:mod:`actbridge.catalog`, gathers. Snakemake validates at parse time, so a bad value stops
the run before any job starts. jsonschema's raw messages for ``oneOf``
branches are unreadable ("is not valid under any of the given schemas"), so
this module turns them into one line per problem: the dotted key, what was
found, what is allowed.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema
import yaml

# Package data, so an installed wheel validates configs as the checkout does; workflow/schemas/ links to it.
SCHEMA_PATH = Path(__file__).resolve().parent / "config.schema.yaml"
MODEL_FORMS = "{micro: {layers, hidden, heads, steps, ...}}, {hf_id, revision}, {path} or {path, gguf_file}"


class ConfigError(ValueError):
    """A config value the schema rejects; the message names the key."""


def load_schema(path: str | Path = SCHEMA_PATH, *, extensions: Iterable[Callable[[dict], None]] = ()) -> dict:
    """The config schema: the static file, completed by each of ``extensions`` in turn (a registry's part: the
    enums that name its items and their own keys; :mod:`actbridge.catalog` passes every registry's)."""
    schema = copy.deepcopy(static_schema(path))
    for extend in extensions:
        extend(schema)
    return schema


@functools.cache
def _static(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def static_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The schema file as written, without any registry's part (read once; do not modify it)."""
    return _static(str(path))


def schema_fragment(key: str) -> dict:
    """The static schema's node of a dotted config key (``stats.resamples``), ``$ref``s followed."""
    root = static_schema()
    node = root
    for part in key.split("."):
        while "$ref" in node:
            node = _resolve(root, node["$ref"])
        try:
            node = node["properties"][part]
        except KeyError:
            raise KeyError(f"config key {key}: not in the schema") from None
    return node


def schema_default(key: str) -> Any:
    """The static schema's default of a dotted config key (``stats.resamples``): the one place defaults are
    written. Read when called, never at import: library dataclasses take it through :func:`default_of`."""
    node = schema_fragment(key)
    if "default" not in node:
        raise KeyError(f"config key {key}: the schema gives it no default")
    return copy.deepcopy(node["default"])


def default_of(key: str) -> Callable[[], Any]:
    """A ``default_factory`` for a dataclass field: :func:`schema_default` of ``key`` when an instance is made."""
    return lambda: schema_default(key)


def checked_value(fragment: dict, value: Any, *, key: str) -> Any:
    """``value`` (None: the fragment's default) validated against one schema ``fragment`` (whose ``$ref``s point
    into the static schema), with its defaults filled in. Raises :class:`ConfigError` naming ``key``."""
    root = static_schema()
    value = copy.deepcopy(fragment.get("default") if value is None else value)
    validator = jsonschema.Draft202012Validator({**fragment, "$defs": root.get("$defs", {})})
    errors = sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        error = errors[0]
        error.path.extendleft(reversed(key.split(".")))
        raise ConfigError(_describe(error))
    _fill_defaults(fragment, value, root)
    return value


def _resolve(root: dict, reference: str) -> dict:
    target = root
    for part in reference.removeprefix("#/").split("/"):
        target = target[part]
    return target


def dotted(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _allowed(schema: dict) -> str:
    if "enum" in schema:
        return f"allowed values: {schema['enum']}"
    if "properties" in schema:
        return f"allowed keys: {sorted(schema['properties'])}"
    bounds = []
    for word, key in (("type", "type"), (">=", "minimum"), ("<=", "maximum"), (">", "exclusiveMinimum"),
                      ("<", "exclusiveMaximum")):
        if key in schema:
            bounds.append(f"{word} {schema[key]}")
    return "allowed: " + ", ".join(bounds) if bounds else ""


def _describe(error: jsonschema.ValidationError) -> str:
    key = dotted(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return (f"config key {dotted([*error.absolute_path, extra[0]]) if extra else key}: unknown key; "
                f"allowed keys here: {sorted(error.schema.get('properties', {}))}")
    if error.validator == "oneOf" and not isinstance(error.instance, dict):
        return f"config key {key}: {error.instance!r} is not allowed; expected {error.schema.get('description')}"
    if error.validator == "oneOf":
        found = sorted(error.instance)
        # The branch whose required keys are all present is the one the user meant: report its errors.
        meant = [i for i, branch in enumerate(error.schema["oneOf"])
                 if branch.get("required") and set(branch["required"]) <= set(error.instance)]
        if len(meant) == 1:
            inner = [e for e in error.context or [] if e.relative_schema_path[0] == meant[0]]
            if inner:
                return "; ".join(_describe(e) for e in inner)
        expected = error.schema.get("description", MODEL_FORMS)
        return f"config key {key}: must be {expected}; found keys {found}"
    if error.validator == "required":
        return f"config key {key}: {error.message}"
    allowed = _allowed(error.schema)
    return f"config key {key}: {error.message}" + (f"; {allowed}" if allowed else "")


def _fill_defaults(schema: dict, instance: Any, root: dict) -> None:
    """Insert ``default`` values of properties the instance leaves out (in place)."""
    if "$ref" in schema:
        _fill_defaults(_resolve(root, schema["$ref"]), instance, root)
        return
    if not isinstance(instance, dict):
        return
    if "oneOf" in schema:
        for branch in schema["oneOf"]:
            if jsonschema.Draft202012Validator(branch | {"$defs": root.get("$defs", {})}).is_valid(instance):
                _fill_defaults(branch, instance, root)
                return
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if name in instance:
            _fill_defaults(sub, instance[name], root)


def validate_config(config: dict, schema: dict) -> dict:
    """Return a validated copy of ``config`` with defaults filled in, against the complete ``schema`` (the
    registries' parts filled in: :func:`actbridge.catalog.validate_config` passes it).

    Raises :class:`ConfigError` listing every problem, each naming its key.
    """
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - {_describe(e)}" for e in errors)
        raise ConfigError(f"invalid configuration ({len(errors)} problem(s)):\n{lines}\n"
                          "See config/README.md for every key.")
    filled = copy.deepcopy(config)
    _fill_defaults(schema, filled, schema)
    _check_semantics(filled)
    return sorted_keys(filled)


def sorted_keys(value: Any) -> Any:
    """Dicts with keys in sorted order, recursively.

    Snakemake compares a job's params by their text, so two configs that
    differ only in key order (a hand-written file versus a dumped one) must
    give identical params, or every job would rerun.
    """
    if isinstance(value, dict):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(item) for item in value]
    return value


def _check_semantics(config: dict) -> None:
    """Constraints a schema cannot state."""
    for name in ("sender", "receiver"):
        micro = config["models"][name].get("micro")
        if micro and micro["hidden"] % micro["heads"]:
            raise ConfigError(f"config key models.{name}.micro.heads: {micro['heads']} does not divide "
                              f"hidden={micro['hidden']}")
        if micro and micro.get("hop_layer", 0) >= micro["layers"]:
            raise ConfigError(f"config key models.{name}.micro.hop_layer: {micro['hop_layer']} must be below "
                              f"layers={micro['layers']} (0 turns first-hop supervision off)")
    injection = config["injection"]
    if "none" not in injection["conditions"]:
        raise ConfigError("config key injection.conditions: must include 'none', the baseline every other "
                          f"condition is paired with; found {injection['conditions']}")
    for key, available, where in (("methods", config["bridge"]["methods"], "bridge.methods"),
                                  ("roles", config["activations"]["roles"], "activations.roles")):
        missing = [value for value in injection[key] if value not in available]
        if missing:
            raise ConfigError(f"config key injection.{key}: {missing} not in {where} {available}; "
                              f"add them there or remove them here")
    if config["figures"]["method"] not in injection["methods"]:
        raise ConfigError(f"config key figures.method: {config['figures']['method']!r} is not injected; "
                          f"allowed: injection.methods {injection['methods']}")


# The keys of each way to name a model; an overlay that names a model another way replaces the spec.
MODEL_ROUTES = {"micro": {"micro"}, "hub": {"hf_id", "revision"}, "path": {"path", "gguf_file"}}


def _routes(spec: dict) -> set[str]:
    return {route for route, keys in MODEL_ROUTES.items() if keys & set(spec)}


def replace_model_specs(merged: dict, overlay: dict) -> dict:
    """Undo the deep merge where an overlay names a model another way than the base config.

    Snakemake merges ``--configfile`` files into ``config/config.yaml`` key by key, so
    ``models.sender: {hf_id: ...}`` over the default ``{micro: {...}}`` would keep both and fail
    validation. A model spec that switches route (micro / hub / path) replaces the base spec
    whole; one that stays on the same route (e.g. ``{micro: {steps: 100}}``) still merges.
    """
    merged = copy.deepcopy(merged)
    overlay_models = overlay.get("models") if isinstance(overlay, dict) else None
    for name, spec in (overlay_models or {}).items():
        current = merged.get("models", {}).get(name)
        if name in ("sender", "receiver") and isinstance(spec, dict) and isinstance(current, dict):
            chosen = _routes(spec)
            if chosen:
                dropped = set().union(*(MODEL_ROUTES[r] for r in MODEL_ROUTES if r not in chosen))
                merged["models"][name] = {key: value for key, value in current.items() if key not in dropped}
    return merged


def routes_over_base(merged: dict, base: dict) -> dict:
    """The model specs of ``merged`` (Snakemake's merge of ``--configfile`` files over the ``base`` config)
    as the user meant them, knowing only the result and the base: where a spec names a model two ways,
    the way the base named it, left exactly as the base had it, came from the base and is dropped. A spec
    whose two ways both differ from the base came so from the user and is kept, for validation to reject."""
    merged = copy.deepcopy(merged)
    for name in ("sender", "receiver"):
        spec = merged.get("models", {}).get(name)
        base_spec = base.get("models", {}).get(name)
        if not isinstance(spec, dict) or not isinstance(base_spec, dict) or len(_routes(spec)) < 2:
            continue
        for route in _routes(base_spec):
            keys = MODEL_ROUTES[route] & set(spec)
            if all(spec[key] == base_spec.get(key) for key in keys):
                merged["models"][name] = {key: value for key, value in spec.items() if key not in keys}
    return merged


def merge_config(base: dict, overlay: dict) -> dict:
    """``overlay`` on ``base`` as Snakemake's ``--configfile`` does, then :func:`replace_model_specs`."""
    def update(target: dict, source: dict) -> None:
        for key, value in source.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                update(target[key], value)
            else:
                target[key] = copy.deepcopy(value)

    merged = copy.deepcopy(base)
    update(merged, overlay)
    return replace_model_specs(merged, overlay)


def model_kind(spec: dict) -> str:
    """``micro``, ``hf_id``, ``path`` or ``gguf`` for one ``models.<name>`` entry."""
    if "micro" in spec:
        return "micro"
    if "hf_id" in spec:
        return "hf_id"
    return "gguf" if "gguf_file" in spec else "path"
