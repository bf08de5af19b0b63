"""The configuration's keys: a key the schema does not know (with the nearest it does), a deleted key, a value
of the wrong type (after interpolation), and what to type instead of what Hydra refused. Refusals are
ConfigErrors naming the key. No torch."""
from __future__ import annotations

import difflib
import re
import typing
from dataclasses import is_dataclass

from omegaconf import OmegaConf

from ..errors import ConfigError
from . import schema as C


def unknown_keys(cfg, schema=C.TrainConfig, prefix: str = "") -> None:
    """Keys the schema does not know (Hydra's `+key=value` adds them past its struct check)."""
    hints = typing.get_type_hints(schema)
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key == "hydra" and not prefix:
            continue
        if key not in hints:
            near = difflib.get_close_matches(str(key), list(hints), n=1)
            raise ConfigError(f"{path} is not a configuration key{f'; did you mean {prefix}{near[0]}' if near else ''} "
                              f"(keys here: {', '.join(hints)})")
        sub = _dataclass_of(hints[key])
        if sub is not None and OmegaConf.is_dict(cfg[key]):
            unknown_keys(cfg[key], sub, f"{path}.")
    gone = [k for k in hints if k not in cfg and typing.get_origin(hints[k]) is not typing.ClassVar]
    if gone and not (prefix == "" and gone == ["hydra"]):
        raise ConfigError(f"{prefix}{gone[0]} was deleted (~{prefix}{gone[0]}); every key of the schema needs a "
                          f"value: set {prefix}{gone[0]}=<value> instead")


def near_key(path: str):
    """The schema key nearest to a misspelt dotted `path` (None when nothing is close)."""
    schema, parts = C.TrainConfig, path.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(schema)
        if part not in hints:
            near = difflib.get_close_matches(part, list(hints), n=1)
            return ".".join(parts[:i] + near) if near else None
        schema = _dataclass_of(hints[part])
        if schema is None:
            return None
    return None


def refusal_hint(message: str) -> str:
    """What to type instead, for Hydra's own refusals: a misspelt key (the nearest, else the keys there), a list
    key given one value, an extra Trainer option without its +, several values without -m, a deleted key."""
    misspelt = re.match(r"Could not override '([^']+)'", message)
    if misspelt and misspelt.group(1).startswith("trainer.extra."):
        return f"; add Trainer options with a +: +{misspelt.group(1)}=<value>"
    near = near_key(misspelt.group(1)) if misspelt else None
    if near:
        return f"; did you mean {near}"
    if misspelt:
        parent, _, _ = misspelt.group(1).rpartition(".")
        keys = _keys_at(parent)
        return f"; the keys{f' of {parent}' if parent else ''} are: {', '.join(keys)}" if keys else ""
    several = re.match(r"Ambiguous value for argument '([^=']+)=", message)
    if several:
        return (f"; several values sweep with -m (cotresnet-train -m {several.group(1)}=...), a list value is "
                f"{several.group(1)}=[...]")
    deleted = re.match(r"Error merging override ~([\w.]+) .*does not support deletion", message)
    if deleted:
        return f"; every key of the schema needs a value: set {deleted.group(1)}=<value> instead"
    single = re.match(r"Error merging override ([\w.]+)=(\S+) .*not a ListConfig", message)
    return f"; {single.group(1)} takes a list: {single.group(1)}=[{single.group(2)}]" if single else ""


def _keys_at(path: str) -> list:
    """The schema's keys under a dotted path ('' for the top), [] where it holds no dataclass."""
    schema = C.TrainConfig
    for part in filter(None, path.split(".")):
        schema = _dataclass_of(typing.get_type_hints(schema).get(part))
        if schema is None:
            return []
    return [k for k, hint in typing.get_type_hints(schema).items() if typing.get_origin(hint) is not typing.ClassVar]


def composition_error(e: Exception) -> ConfigError:
    """Hydra's or OmegaConf's refusal to compose (a misspelt key, a wrong type, a sweep value of the wrong type,
    an unset interpolation) as one line naming the key, with what to type instead."""
    texts = [str(e)] + ([str(e.__cause__)] if e.__cause__ else [])
    message = " ".join(p for p in (t.splitlines()[0] for t in texts) if p and not p.startswith("To append"))
    hint = _group_options("\n".join(texts)) or refusal_hint(message)
    return ConfigError((message.rstrip(".") if hint else message) + hint)


def _group_options(text: str) -> str:
    """A config group's options, for an option Hydra could not find (data=mnist) or load (logger=[csv,nope]):
    from its report, else from its config repository; schemas (`*_schema`) are not options."""
    listed = re.search(r"Available options in '([^']+)':\n((?:\t.*(?:\n|$))+)", text)
    if listed:
        group, options = listed.group(1), [o.strip() for o in listed.group(2).splitlines() if o.strip()]
    else:
        missing = re.search(r"Could not load '(.+)/[^/']+'", text)
        if not missing:
            return ""
        group, options = missing.group(1), _options(missing.group(1))
    options = [o for o in options if not o.endswith("_schema")]
    return f"; {group} is one of: {', '.join(options)}" if options else ""


def _options(group: str) -> list:
    """The options of a config group in Hydra's repository ([] where Hydra is not initialized)."""
    from hydra.core.global_hydra import GlobalHydra

    hydra = GlobalHydra.instance()
    return sorted(hydra.config_loader().get_group_options(group)) if hydra.is_initialized() else []


def resolves_to_its_types(cfg) -> None:
    """Every interpolation resolves (an unset ${oc.env:...}), to a value of its key's type (an interpolation
    is typed only when it resolves): the user's input, refused naming the key before any value is read."""
    from omegaconf.errors import OmegaConfBaseException

    from ..errors import input_error

    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(input_error(e)) from e
    _typed(values, C.TrainConfig, "")


_SCALARS = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}


def _typed(values: dict, schema, prefix: str) -> None:
    """Each value has its schema field's type (int, float, bool, str, optional, list, dict, nested dataclass)."""
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        if key not in hints:
            continue
        tp, path = hints[key], f"{prefix}{key}"
        args = typing.get_args(tp)
        if type(None) in args:
            if value is None:
                continue
            tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
        if is_dataclass(tp):
            if isinstance(value, dict):
                _typed(value, tp, f"{path}.")
            continue
        expected = list if origin in (list, tuple) else dict if origin is dict else tp
        allowed = _SCALARS.get(expected, (expected,))
        if not isinstance(value, allowed) or (expected in (int, float) and isinstance(value, bool)):
            raise ConfigError(f"{path}={value!r} is not allowed; it must be a value of type {expected.__name__}")


def _dataclass_of(tp):
    for t in (tp, *typing.get_args(tp)):
        if is_dataclass(t):
            return t
    return None
