"""What the user asked for, as a picklable value: where the costs come from and which flags override them.

    request = CostRequest(model="gpt2-small", device="h100-sxm", overrides={"latency": "10 us"})
    costs = request.costs_for(schedule)     # analytic model cut into the schedule's stages, then flags

The `simulate` and `sweep` commands build one from their flags; the sweep ships it to worker processes.
Costs come from exactly one source: a TOML file, a model + device preset pair, or (neither) unit costs
t_F = 1 s, t_B = 2 s with no communication, the closed forms' setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from schedules.ir import Schedule
from simulator.analytic import cost_model
from simulator.costfile import load_costs, with_overrides
from simulator.costs import CostModel
from simulator.presets import device as device_preset
from simulator.presets import model as model_preset
from simulator.units import CostError, parse_count

SHAPE_FLAGS = {"layers": "layers", "hidden": "hidden", "sequence": "seq-len", "split": "split"}
"""CostRequest.shape's keys and the flags that set them (the executor's names)."""


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


@dataclass(frozen=True, kw_only=True)
class CostRequest:
    """A cost source plus overrides; `costs_for` turns it into a CostModel for one schedule."""

    costs_file: str | None = None
    """Path of a TOML cost file (docs/cost-model.md)."""
    model: str | None = None
    """Model preset name (simulator/presets.py); needs `device`."""
    device: str | None = None
    """Device preset name; needs `model`."""
    microbatch_size: int | None = None
    """Samples per microbatch, overriding the model preset's (or the file's)."""
    shape: dict[str, Any] = field(default_factory=dict)
    """Changes to the model preset, as the executor's flags make them: layers, hidden, sequence (the
    context length, --seq-len), split (blocks per stage). Needs `model`."""
    optimizer: str | None = None
    """Optimizer whose state is held and whose step is costed; None keeps the source's (else adamw)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of costfile.with_overrides (flag values, units allowed)."""

    def __post_init__(self) -> None:
        if self.costs_file is not None and (self.model is not None or self.device is not None):
            raise CostError("--costs and --model/--device are two cost sources: give one")
        if (self.model is None) != (self.device is None):
            missing = "--device" if self.device is None else "--model"
            raise CostError(f"the analytic cost model needs both --model and --device ({missing} missing)")
        if self.shape and self.model is None:
            flags = ", ".join(f"--{SHAPE_FLAGS[key]}" for key in self.shape)
            raise CostError(f"{flags}: the shape of the analytic model, which needs --model and --device")
        if self.model is not None:
            model_preset(self.model, **self.shape)
            device_preset(self.device)  # type: ignore[arg-type]
        if self.microbatch_size is not None:
            parse_count(self.microbatch_size, "--microbatch-size", minimum=1)

    @property
    def label(self) -> str:
        """Short name of the cost source and its overrides, for tables and CSV rows."""
        if self.costs_file is not None:
            label = self.costs_file
        elif self.model is not None:
            shape = "".join(f",{key}={_shown(value)}" for key, value in self.shape.items())
            label = f"{self.model}{shape}@{self.device}"
        else:
            label = "unit"
        changes = [f"{key}={value}" for key, value in self.overrides.items()]
        if self.optimizer is not None:
            changes.append(f"optimizer={self.optimizer}")
        return f"{label} ({', '.join(changes)})" if changes else label

    def base(self, model_stages: int) -> CostModel:
        """The cost model before overrides, for a model cut into `model_stages` stages."""
        if self.costs_file is not None:
            costs = load_costs(self.costs_file)
        elif self.model is not None:
            spec = model_preset(self.model, **self.shape, microbatch_size=self.microbatch_size)
            device = device_preset(self.device)  # type: ignore[arg-type]
            costs = cost_model(spec, device, stages=model_stages, optimizer=self.optimizer or "adamw")
        else:
            costs = CostModel.uniform()
        if self.microbatch_size is not None:
            costs = replace(costs, microbatch_size=self.microbatch_size)
        return costs

    def costs_for(self, schedule: Schedule) -> CostModel:
        """The cost model for `schedule`: its model stages, then the optimizer and the flags."""
        model_stages = schedule.layout.stages_per_pipeline // schedule.chunks
        costs = with_overrides(self.base(model_stages), optimizer=self.optimizer, **self.overrides)
        costs.check_stages(model_stages)
        return costs
