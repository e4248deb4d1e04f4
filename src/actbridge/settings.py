"""The configuration as one typed tree: a node per config section, each knowing which of its keys change
which outputs (the rules' params are built from that, so a changed value reruns exactly its dependents).

Defaults are written once, in the schema (src/actbridge/config.schema.yaml, with the registries' parts):
the tree is built from a *validated* config, whose defaults are filled in, and has none of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from actbridge.bridges.methods import BRIDGE_METHODS
from actbridge.data.worlds import DataConfig
from actbridge.injection.conditions import CONDITIONS, store_inputs
from actbridge.kv import kv_method
from actbridge.kv.maps import KV_MAPS
from actbridge.stats.paired import StatsSettings


@dataclass(frozen=True)
class RunSettings:
    """How jobs run: where, in what precision, with how many threads, in batches of how many tokens. Only
    ``dtype`` changes results (a param of the rules that run models); the rest sizes time and memory."""

    device: str
    dtype: str
    threads: int
    batch_tokens: int

    def threads_for(self, job_threads: int) -> int:
        """torch threads of a job: ``threads``, or the job's own Snakemake threads where it is 0."""
        return self.threads or job_threads


@dataclass(frozen=True)
class ActivationSettings:
    """``activations.*``: which layers and roles are stored, in what dtype and shards."""

    layers: Any  # 'all', a list, or {sender: ..., receiver: ...} (actbridge.activations.layers.layers_for)
    roles: tuple[str, ...]
    dtype: str
    shard_rows: int
    batch_size: int

    def params(self) -> dict:
        """The keys that change the shards' bytes (the layers are their own param, per model)."""
        return {"roles": list(self.roles), "dtype": self.dtype, "shard_rows": self.shard_rows,
                "batch_size": self.batch_size}


@dataclass(frozen=True)
class BridgeConfig:
    """``bridge.*``: which maps are fitted between which layers, and each method's own keys."""

    keys: Mapping[str, Any]  # every bridge.* key, as validated

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.keys["methods"])

    @property
    def seeds(self) -> int:
        return int(self.keys["seeds"])

    def method_params(self, method: str, *, dtype: str) -> dict:
        """Only the keys ``method`` reads (:attr:`BridgeMethod.keys`), so tuning the MLP never refits the
        ridge maps; a method trained through the receiver runs it in the configured ``dtype``."""
        chosen = BRIDGE_METHODS[method]
        params = {key: self.keys[key] for key in chosen.declared()}
        if chosen.through_receiver:
            params["dtype"] = dtype
        return params

    def fit_params(self, context_modes) -> dict:
        """Which rows each fit uses: one fit per context mode, or ``fit_modes`` pooled (read only then)."""
        fit = {"strategy": self.keys["fit"], "context_modes": list(context_modes)}
        if fit["strategy"] == "pooled":
            fit["pooled_modes"] = self.keys["fit_modes"]
        return fit


@dataclass(frozen=True)
class InjectionConfig:
    """``injection.*``: which conditions at which strengths, into which bridges, at which roles."""

    conditions: tuple[str, ...]
    alphas: tuple[float, ...]
    methods: tuple[str, ...]
    roles: tuple[str, ...]
    condition_settings: Mapping[str, Mapping]  # injection.<condition> of each registered condition with settings

    def params(self) -> dict:
        """The keys that change an injection job's rows, and the settings of the conditions that have some."""
        params = {"conditions": list(self.conditions), "alphas": list(self.alphas), "roles": list(self.roles)}
        own = {name: dict(self.condition_settings[name]) for name in self.conditions
               if CONDITIONS[name].settings_schema}
        if own:
            params["condition_settings"] = own
        return params

    def stored_inputs(self) -> dict[str, tuple[str, str]]:
        """Input name -> (model, split) of the stored states an injection job reads."""
        return store_inputs(self.conditions)


@dataclass(frozen=True)
class KVSettings:
    """``kv.*``: whether the KV channel runs, with which maps, conditions and numbers of blocks sent."""

    enabled: bool
    maps: tuple[str, ...]
    conditions: tuple[str, ...]
    layers_sent: tuple[Any, ...]  # 'all' or a number of receiver blocks
    seed: int
    map_settings: Mapping[str, Mapping]  # kv.<map> of each registered map kind

    def map_params(self, kind: str) -> dict:
        """What a map's fit reads: only its own keys, so tuning one kind never refits another."""
        return {"settings": dict(self.map_settings.get(kind, {}))}

    def injection_params(self) -> dict:
        """The keys that change a KV injection job's rows (the number of blocks is its wildcard)."""
        return {"conditions": list(self.conditions), "seed": self.seed}

    def methods(self) -> list[str]:
        """The method column of the channel's rows: ``kv_<map>`` per map kind, as the statistics name them."""
        return [kv_method(kind) for kind in self.maps] if self.enabled else []


@dataclass(frozen=True)
class Settings:
    """The whole validated config, one node per section."""

    run: RunSettings
    data: DataConfig
    models: Mapping[str, Any]
    activations: ActivationSettings
    bridge: BridgeConfig
    injection: InjectionConfig
    stats: StatsSettings
    figure_method: str
    kv: KVSettings

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Settings":
        """From a config that :func:`actbridge.config.validate_config` returned (every default filled in)."""
        injection = config["injection"]
        return cls(
            run=RunSettings(config["device"], config["dtype"], config["threads"], config["batch_tokens"]),
            data=DataConfig.from_config(config),
            models=config["models"],
            activations=ActivationSettings(**{key: config["activations"][key] for key in
                                              ("layers", "dtype", "shard_rows", "batch_size")},
                                           roles=tuple(config["activations"]["roles"])),
            bridge=BridgeConfig(config["bridge"]),
            injection=InjectionConfig(tuple(injection["conditions"]), tuple(injection["alphas"]),
                                      tuple(injection["methods"]), tuple(injection["roles"]),
                                      {name: injection[name] for name in CONDITIONS.names()
                                       if CONDITIONS[name].settings_schema}),
            stats=StatsSettings.from_config(config["stats"]),
            figure_method=config["figures"]["method"],
            kv=KVSettings(bool(config["kv"]["enabled"]), tuple(config["kv"]["maps"]), tuple(config["kv"]["conditions"]),
                          tuple(config["kv"]["layers_sent"]), int(config["kv"]["seed"]),
                          {name: config["kv"][name] for name in KV_MAPS.names()}))
