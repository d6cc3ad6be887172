"""Read a cost model from TOML, write one back, and apply command-line overrides.

    from simulator.costfile import dumps_costs, load_costs, with_overrides
    costs = with_overrides(load_costs("simulator/presets/example.toml"), forward="2 ms")
    Path("fitted.toml").write_text(dumps_costs(costs))     # e.g. a model fitted from a measured trace

The file layout (every field and its unit: docs/cost-model.md):

    optimizer = "adamw"
    overlap_f_b = 0.5     # an OVERLAP_F_B pair: the longer half + this share of the shorter one
    [defaults]            # every stage unless a [stages.N] table says otherwise
    forward = "1 ms"      # times: seconds, or a string with ns/us/ms/s
    [stages.3]            # stage 3 differs; with any [stages.N], stages 0..N must all be there
    forward = "1.4 ms"
    [link]                # latency, bandwidth ("25 GB/s", "100 Gbit/s"), overlap
    [data_parallel]       # replicas, latency, bandwidth, overlap
    [jitter]              # distribution, sigma, seed
    [stragglers]          # "rank" = slow-down factor
    [workload]            # microbatch_size, sequence_length
    [memory]              # capacity, master_weights, persistent_gradients
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from schedules.costs import DEFAULT_OVERLAP_F_B
from simulator.costs import (
    DEFAULT_JITTER_SIGMA,
    EMPIRICAL,
    HOST_FIELDS,
    SIZE_FIELDS,
    WARMUP_FIELDS,
    CostModel,
    StageCost,
)
from simulator.units import (
    CostError,
    parse_bandwidth,
    parse_bytes,
    parse_count,
    parse_factor,
    parse_time,
)

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

_STAGE_TIMES = ("forward", "backward", "backward_weight", "optimizer_step", *HOST_FIELDS, *WARMUP_FIELDS)
_STAGE_SIZES = (*SIZE_FIELDS, "matrix_bytes")
_TABLES = {
    "link": ("latency", "bandwidth", "overlap", "jitter"),
    "data_parallel": ("replicas", "latency", "bandwidth", "overlap"),
    "jitter": ("distribution", "sigma", "seed", "factors"),
    "workload": ("microbatch_size", "sequence_length"),
    "memory": ("capacity", "master_weights", "persistent_gradients"),
}


def load_costs(path: str | Path) -> CostModel:
    """Parse a cost file; any problem is a CostError naming the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CostError(f"{path}: cannot read cost file ({error.strerror})") from None
    return loads_costs(text, source=str(path))


def loads_costs(text: str, *, source: str) -> CostModel:
    """Parse the text of a cost file (named `source` in errors and in the model's source)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise CostError(f"{source}: not valid TOML ({error})") from None
    try:
        costs = costs_from_dict(data)
    except CostError as error:
        raise CostError(f"{source}: {error}") from None
    return replace(costs, source={"file": source})


def costs_from_dict(data: dict[str, Any]) -> CostModel:
    """Build a CostModel from the TOML layout of the module docstring."""
    known = {"optimizer", "overlap_f_b", "defaults", "stages", "stragglers", *_TABLES}
    for key in data:
        if key not in known:
            raise CostError(f"unknown key {key!r} (known: {', '.join(sorted(known))})")
    for name in _TABLES:
        _check_keys(name, data.get(name, {}), _TABLES[name])
    kwargs: dict[str, Any] = {"stages": _stages(data.get("defaults", {}), data.get("stages", {}))}
    if "optimizer" in data:
        kwargs["optimizer"] = str(data["optimizer"])
    if "overlap_f_b" in data:
        kwargs["overlap_f_b"] = parse_factor(data["overlap_f_b"], "overlap_f_b")
    kwargs.update(_link(data.get("link", {})))
    kwargs.update(_data_parallel(data.get("data_parallel", {})))
    kwargs.update(_jitter(data.get("jitter", {})))
    workload = data.get("workload", {})
    for key in ("microbatch_size", "sequence_length"):
        if key in workload:
            kwargs[key] = parse_count(workload[key], f"workload.{key}", minimum=1)
    if "capacity" in data.get("memory", {}):
        kwargs["memory_capacity"] = parse_bytes(data["memory"]["capacity"], "memory.capacity")
    for key in ("master_weights", "persistent_gradients"):
        if key in data.get("memory", {}):
            kwargs[key] = _flag(data["memory"][key], f"memory.{key}")
    kwargs["stragglers"] = _stragglers(data.get("stragglers", {}))
    return CostModel(**kwargs)


def _check_keys(table: str, values: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(values, dict):
        raise CostError(f"{table}: expected a table [{table}], got {values!r}")
    for key in values:
        if key not in allowed:
            raise CostError(f"{table}.{key}: unknown key (known: {', '.join(allowed)})")


def _stage(values: dict[str, Any], where: str, base: StageCost) -> StageCost:
    _check_keys(where, values, _STAGE_TIMES + _STAGE_SIZES)
    changes: dict[str, Any] = {}
    for key, value in values.items():
        parse = parse_time if key in _STAGE_TIMES else parse_bytes
        changes[key] = parse(value, f"{where}.{key}")
    try:
        return replace(base, **changes)
    except CostError as error:  # StageCost names its fields stage.x: say which table
        raise CostError(str(error).replace("stage.", f"{where}.")) from None


def _stages(defaults: dict[str, Any], stages: dict[str, Any]) -> tuple[StageCost, ...]:
    base = _stage(defaults, "defaults", StageCost())
    if not isinstance(stages, dict):
        raise CostError(f"stages: expected [stages.N] tables, got {stages!r}")
    if not stages:
        return (base,)
    indices: dict[int, dict[str, Any]] = {}
    for key, values in stages.items():
        index = parse_count(key, f"stages.{key} (stage number)")
        if not isinstance(values, dict):
            raise CostError(f"stages.{key}: expected a table [stages.{key}]")
        indices[index] = values
    for index in range(max(indices) + 1):
        if index not in indices:
            raise CostError(f"[stages.{index}] missing (stages 0..{max(indices)} must all be given)")
    return tuple(_stage(indices[i], f"stages.{i}", base) for i in range(len(indices)))


def _link(link: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "latency" in link:
        out["latency"] = parse_time(link["latency"], "link.latency")
    if "bandwidth" in link:
        out["bandwidth"] = parse_bandwidth(link["bandwidth"], "link.bandwidth")
    if "overlap" in link:
        out["overlap"] = _flag(link["overlap"], "link.overlap")
    if "jitter" in link:
        out["link_jitter"] = _factors(link["jitter"], "link.jitter")
    return out


def _factors(values: Any, where: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not values:
        raise CostError(f"{where}: expected a non-empty list of factors, got {values!r}")
    return tuple(parse_factor(value, f"{where}[{index}]") for index, value in enumerate(values))


def _data_parallel(table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "replicas" in table:
        out["data_parallel"] = parse_count(table["replicas"], "data_parallel.replicas", minimum=1)
    if "latency" in table:
        out["dp_latency"] = parse_time(table["latency"], "data_parallel.latency")
    if "bandwidth" in table:
        out["dp_bandwidth"] = parse_bandwidth(table["bandwidth"], "data_parallel.bandwidth")
    if "overlap" in table:
        out["dp_overlap"] = _flag(table["overlap"], "data_parallel.overlap")
    return out


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise CostError(f"{where}: expected true or false, got {value!r}")
    return value


def _jitter(table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "distribution" in table:
        out["jitter"] = str(table["distribution"])
    if "sigma" in table:
        out["jitter_sigma"] = parse_factor(table["sigma"], "jitter.sigma")
    elif out.get("jitter", "none") != "none":
        out["jitter_sigma"] = DEFAULT_JITTER_SIGMA
    if out.get("jitter_sigma", 0) > 0 and "distribution" not in table:  # "none", written out, is fine
        raise CostError("jitter.sigma: no jitter.distribution to apply it to (normal, lognormal or uniform)")
    if "seed" in table:
        out["seed"] = parse_count(table["seed"], "jitter.seed")
    if "factors" in table:
        out["jitter_factors"] = _factors(table["factors"], "jitter.factors")
    return out


def _stragglers(table: Any) -> tuple[tuple[int, float], ...]:
    if not isinstance(table, dict):
        raise CostError(f"stragglers: expected a table of rank = factor, got {table!r}")
    pairs = []
    for key, value in table.items():
        rank = parse_count(key, f"stragglers.{key} (rank)")
        factor = parse_factor(value, f"stragglers.{key}")
        if factor <= 0:
            raise CostError(f"stragglers.{key}: factor must be positive, got {value!r}")
        pairs.append((rank, factor))
    return tuple(sorted(pairs))


def with_overrides(
    costs: CostModel,
    *,
    forward: object = None,
    backward: object = None,
    backward_weight: object = None,
    optimizer_step: object = None,
    activation_bytes: object = None,
    latency: object = None,
    bandwidth: object = None,
    optimizer: str | None = None,
    overlap: bool | None = None,
    overlap_f_b: object = None,
    data_parallel: object = None,
    seed: object = None,
    jitter: str | None = None,
    jitter_sigma: object = None,
) -> CostModel:
    """Flags win over the file or presets; None leaves a field alone. Values may carry units.

    The flag names are the CLI's: --tf forward, --tb backward (full, B = I + W), --tw its W part,
    --topt optimizer_step, --activation-bytes, --latency, --bandwidth, --optimizer, --no-overlap,
    --overlap-f-b, --dp, --seed, --jitter, --jitter-sigma. A jitter distribution without a sigma (here
    or in the source) gets DEFAULT_JITTER_SIGMA; a sigma without a distribution is an error.
    """
    stage_changes: dict[str, Any] = {}
    for key, value, flag in (
        ("forward", forward, "--tf"),
        ("backward", backward, "--tb"),
        ("backward_weight", backward_weight, "--tw"),
        ("optimizer_step", optimizer_step, "--topt"),
    ):
        if value is not None:
            stage_changes[key] = parse_time(value, flag)
    if activation_bytes is not None:
        stage_changes["activation_bytes"] = parse_bytes(activation_bytes, "--activation-bytes")
    if stage_changes:
        costs = costs.with_stages(**stage_changes)
    changes: dict[str, Any] = {}
    if latency is not None:
        changes["latency"] = parse_time(latency, "--latency")
    if bandwidth is not None:
        changes["bandwidth"] = parse_bandwidth(bandwidth, "--bandwidth")
    if optimizer is not None:
        changes["optimizer"] = optimizer
    if overlap is not None:
        changes["overlap"] = overlap
    if overlap_f_b is not None:
        changes["overlap_f_b"] = parse_factor(overlap_f_b, "--overlap-f-b")
        if changes["overlap_f_b"] > 1:
            raise CostError(f"--overlap-f-b: must be between 0 and 1, got {overlap_f_b!r}")
    if data_parallel is not None:
        changes["data_parallel"] = parse_count(data_parallel, "--dp", minimum=1)
    if seed is not None:
        changes["seed"] = parse_count(seed, "--seed")
    if jitter is not None:
        changes["jitter"] = jitter
        if jitter != EMPIRICAL:  # a flag's distribution replaces a calibrated one
            changes["jitter_factors"] = ()
    if jitter_sigma is not None:
        changes["jitter_sigma"] = parse_factor(jitter_sigma, "--jitter-sigma")
    changes.update(_jitter_defaults(costs, jitter, jitter_sigma))
    return replace(costs, **changes) if changes else costs


def _jitter_defaults(costs: CostModel, jitter: str | None, jitter_sigma: object) -> dict[str, Any]:
    """--jitter alone gets the default spread; --jitter-sigma alone, with no distribution, is refused."""
    distribution = jitter if jitter is not None else costs.jitter
    if jitter_sigma is not None and distribution == "none":
        raise CostError(
            f"--jitter-sigma {jitter_sigma}: no jitter distribution to apply it to "
            "(add --jitter normal, lognormal or uniform)"
        )
    if jitter not in (None, "none") and jitter_sigma is None and costs.jitter_sigma == 0:
        return {"jitter_sigma": DEFAULT_JITTER_SIGMA}
    return {}


def dumps_costs(costs: CostModel) -> str:
    """The cost model as a TOML file that load_costs reads back to an equal CostModel (how a model
    fitted from a measured trace is saved for `pipesim simulate --costs`)."""
    lines = [f"optimizer = {_toml(costs.optimizer)}", ""]
    if costs.overlap_f_b != DEFAULT_OVERLAP_F_B:  # only then: older files keep their bytes
        lines[1:1] = [f"overlap_f_b = {_toml(costs.overlap_f_b)}"]
    if len(costs.stages) == 1:
        lines += ["[defaults]", *_stage_lines(costs.stages[0]), ""]
    else:
        for index, stage in enumerate(costs.stages):
            lines += [f"[stages.{index}]", *_stage_lines(stage), ""]
    tables = {
        "link": {
            "latency": costs.latency,
            "bandwidth": costs.bandwidth,
            "overlap": costs.overlap,
            **({"jitter": list(costs.link_jitter)} if costs.link_jitter else {}),
        },
        "data_parallel": {
            "replicas": costs.data_parallel,
            "latency": costs.dp_latency,
            "bandwidth": costs.dp_bandwidth,
            **({"overlap": True} if costs.dp_overlap else {}),
        },
        "jitter": {
            "distribution": costs.jitter,
            "sigma": costs.jitter_sigma,
            "seed": costs.seed,
            **({"factors": list(costs.jitter_factors)} if costs.jitter_factors else {}),
        },
        "stragglers": {str(rank): factor for rank, factor in costs.stragglers},
        "workload": {"microbatch_size": costs.microbatch_size, "sequence_length": costs.sequence_length},
        "memory": {
            **({} if costs.memory_capacity is None else {"capacity": costs.memory_capacity}),
            **({"master_weights": True} if costs.master_weights else {}),
            **({"persistent_gradients": True} if costs.persistent_gradients else {}),
        },
    }
    for name, values in tables.items():
        if values:
            lines += [f"[{name}]", *(f"{_key(key)} = {_toml(value)}" for key, value in values.items()), ""]
    return "\n".join(lines)


def _stage_lines(stage: StageCost) -> list[str]:
    names = (*_STAGE_TIMES, *_STAGE_SIZES)
    return [
        f"{name} = {_toml(getattr(stage, name))}"
        for name in names
        if getattr(stage, name) is not None
        and (name not in HOST_FIELDS + WARMUP_FIELDS or getattr(stage, name))
    ]


def _key(key: str) -> str:
    return f'"{key}"' if key.isdigit() else key


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value == float("inf"):
        return '"inf"'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return repr(value)
