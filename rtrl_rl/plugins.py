"""Plugins: modules that add cores, learners or env families from their own files.

A plugin is an ordinary module that, when imported, calls ``register_core``
(``rtrl_rl.models.registry``), ``register_learner`` (``rtrl_rl.algos``) or
``register_env_family`` (``rtrl_rl.envs``). It is found in two ways:

- ``RTRL_RL_PLUGINS=pkg.module,other`` (comma-separated module names, importable from
  ``sys.path``);
- an installed distribution's entry point in the group ``rtrl_rl.plugins``
  (``[project.entry-points."rtrl_rl.plugins"] mine = "mypkg.plugin"`` in its
  ``pyproject.toml``).

``load_plugins()`` imports them once per process. ``rtrl_rl.config`` calls it before it
derives the config schema, Hydra's presets and the option blocks from the registries, so
``rtrl-train``, ``rtrl-eval`` and every spawned worker (which imports ``rtrl_rl.config``
to unpickle its run config, and meets ``make_env`` / ``make_core`` which call it too) see
the same names. A plugin therefore imports the registries it needs, never
``rtrl_rl.config``: that module is still being built while the plugin runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping
from typing import Any

from rtrl_rl.errors import ConfigError, PluginError

ENV_VAR = "RTRL_RL_PLUGINS"
ENTRY_POINT_GROUP = "rtrl_rl.plugins"

_state: dict[str, Any] = {"loading": False, "loaded": [], "error": None}


def plugin_names() -> list[tuple[str, str]]:
    """``(name, where it is named)`` for every plugin: the env var's modules, then the entry
    points of ``rtrl_rl.plugins``."""
    names = [(m.strip(), ENV_VAR) for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]
    from importlib.metadata import entry_points

    names += [(ep.value, f"entry point '{ep.name}'")
              for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return names


def load_plugins() -> list[str]:
    """Import every plugin once (later calls return at once); returns the modules loaded.
    A plugin that fails is a one-line ``PluginError`` naming it, raised again on every
    later call so that no process goes on without it."""
    if _state["error"] is not None:
        raise _state["error"]
    if _state["loading"]:  # a plugin's own import reached here: already under way
        return list(_state["loaded"])
    _state["loading"] = True
    for name, where in plugin_names():
        if name in _state["loaded"]:
            continue
        try:
            _import(name.partition(":")[0])  # an entry point may say module:attr
        except PluginError as e:
            _state["error"] = PluginError(f"plugin '{name}' ({where}): {e}")
            raise _state["error"] from None
        _state["loaded"].append(name)
    return list(_state["loaded"])


def _import(module: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise PluginError(f"no module named '{e.name}' (is its folder on PYTHONPATH?)"
                              ) from None
        raise PluginError(f"failed to import: {type(e).__name__}: {_first_line(e)}") from None
    except ConfigError as e:  # a registration it made was refused
        raise PluginError(str(e)) from None
    except Exception as e:  # noqa: BLE001  (any error in a plugin is reported as one line)
        raise PluginError(f"failed to import: {type(e).__name__}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def defaults(options: type) -> dict[str, Any]:
    """The field defaults of the dataclass ``options``, without running its checks."""
    out = {}
    for f in dataclasses.fields(options):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def store_preset(group: str, name: str, options: type, keys: Mapping[str, Any] = ()) -> None:
    """Make ``group=name`` a Hydra preset: ``keys`` and the defaults of the dataclass
    ``options``, as a file ``configs/<group>/<name>.yaml`` would be (Hydra finds it in its
    ConfigStore, which it reads when composing, after the plugins are imported)."""
    from hydra.core.config_store import ConfigStore

    node = {**dict(keys), **defaults(options)}
    ConfigStore.instance().store(group=group, name=name, node=node, provider="rtrl_rl")


def stored_presets(group: str) -> list[str]:
    """The presets of ``group`` in Hydra's ConfigStore (those ``store_preset`` made)."""
    from hydra.core.config_store import ConfigStore

    found = ConfigStore.instance().repo.get(group, {})
    return sorted(n.removesuffix(".yaml") for n in found) if isinstance(found, dict) else []
