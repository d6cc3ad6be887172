"""What a page turns into simulator input: uploaded traces, and the cost source the user chose.

    trace = trace_from_bytes(upload.getvalue(), name=upload.name)     # TraceError: one line
    choice = CostChoice(source="presets", model="gpt2-small", device="h100-sxm")
    costs = cost_model(choice, schedule)                               # CostError: one line

No Streamlit here. A bad file or value raises a UserError whose message is shown as one error in the page,
as the commands print it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from schedules.ir import Schedule
from simulator.costfile import loads_costs
from simulator.costs import CostModel
from simulator.request import CostRequest, complete_times
from traces.io import trace_from_dict
from traces.schema import Trace, TraceError

CostSource = Literal["unit", "values", "file", "presets"]
COST_SOURCES: dict[str, str] = {
    "unit": "unit costs (t_F = 1, t_B = 2, no communication)",
    "values": "explicit values",
    "file": "a cost file (TOML)",
    "presets": "model and device presets",
}
"""The cost sources of the Explore page and their labels."""

VALUE_FIELDS: dict[str, str] = {
    "forward": "t_F (forward)",
    "backward": "t_B (full backward)",
    "backward_weight": "t_W (weight part of the backward)",
    "optimizer_step": "t_OPT (optimizer step)",
    "latency": "latency per message",
    "bandwidth": "link bandwidth",
    "activation_bytes": "activation bytes per message",
}
"""costfile.with_overrides keywords that the explicit-values source sets, and their labels."""


def trace_from_bytes(data: bytes, *, name: str) -> Trace:
    """A trace from an uploaded file; TraceError naming the file and the problem, as read_trace does."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TraceError(f"{name}: not a text file (not UTF-8), so not a pipesim trace") from None
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as error:
        ends_early = error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated")
        hint = " (the file ends early: truncated?)" if ends_early else ""
        raise TraceError(f"{name}: not JSON (line {error.lineno}: {error.msg}){hint}") from None
    try:
        return trace_from_dict(loaded)
    except TraceError as error:
        raise TraceError(f"{name}: {error}") from None


@dataclass(frozen=True, kw_only=True)
class CostChoice:
    """Where the Explore and Sweep pages take their costs from (one source, as on the command line)."""

    source: CostSource = "unit"
    """unit, values (explicit times and link), file (an uploaded cost file) or presets."""
    values: tuple[tuple[str, str], ...] = ()
    """(with_overrides keyword, value) pairs of the explicit-values source, e.g. ("forward", "2ms")."""
    file_name: str = ""
    """The uploaded cost file's name (named in errors)."""
    file_text: str = ""
    """The uploaded cost file's text."""
    model: str = "gpt2-small"
    """Model preset (simulator.presets.MODELS) of the presets source."""
    device: str = "h100-sxm"
    """Device preset (simulator.presets.DEVICES) of the presets source."""
    microbatch_size: int | None = None
    """Samples per microbatch for the presets source (None: the preset's)."""

    def request(self) -> CostRequest:
        """The simulator's CostRequest for the unit, values and presets sources."""
        if self.source == "presets":
            return CostRequest(model=self.model, device=self.device, microbatch_size=self.microbatch_size)
        if self.source == "values":
            overrides, notes = complete_times(self._given())
            return CostRequest(overrides=overrides, notes=notes)
        return CostRequest()

    def _given(self) -> dict[str, str]:
        return {key: value.strip() for key, value in self.values if value.strip()}

    def notes(self) -> tuple[str, ...]:
        """What was derived from the values (t_F alone also sets t_B = 2 t_F, as the flags do)."""
        return complete_times(self._given())[1] if self.source == "values" else ()

    @property
    def label(self) -> str:
        """Short name of the source, for titles and file names."""
        return self.file_name if self.source == "file" else self.request().label


def cost_model(choice: CostChoice, schedule: Schedule) -> CostModel:
    """The cost model of `choice` for `schedule` (CostError naming the problem)."""
    if choice.source != "file":
        return choice.request().costs_for(schedule)
    costs = loads_costs(choice.file_text, source=choice.file_name or "uploaded cost file")
    costs.check_stages(schedule.layout.stages_per_pipeline // schedule.chunks)  # as CostRequest.costs_for
    return costs
