"""Words under the numbers: what the printed outputs mean, and sizes and rates in units a reader can check.

    from pipesim.commands.readout import capacity, legend, memory_notes, throughput
    print(legend(ratio=True, chunks=2))       # the lines under `pipesim schedules show`
    capacity(80 * 10**9)                      # '80 GB (74.51 GiB)': as given, and beside the peaks' unit

`pipesim schedules show`, `simulate` and `demo` print these; docs/schedules.md defines every output in
full. Pure functions of plain numbers, so the schedules command can use them without loading SimPy.
"""

from __future__ import annotations

from collections.abc import Sequence

DECIMAL_UNITS = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))
BINARY_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def legend(*, ratio: bool = False, chunks: int = 1, activations: bool = True) -> str:
    """A few lines defining the words of the tables above them (all of them: docs/schedules.md)."""
    lines = ["bubble fraction: idle share of the P ranks over one step, 1 - compute / (P x step time)"]
    if ratio:
        lines.append("bubble ratio: idle over compute time in one step, fraction / (1 - fraction)")
    if activations:
        lines.append("peak activations: most microbatches held at once between their forward and backward")
        if chunks > 1:
            lines.append(f"  (a chunk is 1/{chunks} of a stage, so a microbatch there counts 1/{chunks})")
    lines += [
        "delay: how many updates old the gradients that an update applies are",
        "mismatches: microbatches whose forward and backward saw different weights (docs/schedules.md)",
    ]
    return "\n".join(lines)


def size(value: int | None) -> str:
    """Bytes with a binary unit: 1.5 GiB; None as '-'."""
    if value is None:
        return "-"
    for unit, scale in BINARY_UNITS:
        if value >= scale:
            return f"{value / scale:.4g} {unit}"
    return f"{value} B"


def capacity(value: int) -> str:
    """Device memory in the unit it was most likely given: '80 GB (74.51 GiB)', '23 GiB', '1536 MB (...)'.

    The unit that divides the value into the shortest whole number wins; a decimal one is shown with the
    binary size that the peaks use beside it.
    """
    decimal, binary = _whole(value, DECIMAL_UNITS), _whole(value, BINARY_UNITS)
    if decimal is not None and (binary is None or len(str(decimal[0])) < len(str(binary[0]))):
        return f"{decimal[0]} {decimal[1]} ({size(value)})"
    return size(value)


def _whole(value: int, units: tuple[tuple[str, int], ...]) -> tuple[int, str] | None:
    """(value / unit, unit) for the largest unit that divides the value exactly."""
    return next(
        ((value // scale, unit) for unit, scale in units if value >= scale and value % scale == 0), None
    )


def memory_modelled(peaks: Sequence[int | None]) -> bool:
    """False when the costs give no sizes at all (unit costs): every peak is 0 or unknown."""
    return any(peaks)


def memory_notes(peaks: Sequence[int | None], capacity_bytes: int | None, who: str = "") -> list[str]:
    """A warning when the largest peak exceeds the device's memory; nothing otherwise."""
    known = [(peak, rank) for rank, peak in enumerate(peaks) if peak is not None]
    if not capacity_bytes or not known:
        return []
    peak, rank = max(known)
    if peak <= capacity_bytes:
        return []
    return [
        f"warning: {who}predicted peak memory {size(peak)} (rank {rank}) exceeds the "
        f"{capacity(capacity_bytes)} of one device: it would not fit"
    ]


NO_SIZES = "peak memory: not modelled, these costs give no sizes (use --costs FILE or --model/--device)"


def throughput(samples_per_s: float, tokens_per_s: float, microbatch_size: int, sequence_length: int) -> str:
    """Samples/s and tokens/s, or what the costs allow to say when they give no workload."""
    if sequence_length > 1:
        return f"{samples_per_s:.4g} samples/s, {tokens_per_s:.4g} tokens/s"
    unit = "samples/s" if microbatch_size > 1 else "microbatches/s"
    return f"{samples_per_s:.4g} {unit} ({workload_note(microbatch_size, sequence_length)})"


def workload_note(microbatch_size: int, sequence_length: int) -> str | None:
    """Why throughput is not in samples/s and tokens/s: the costs do not say how big a microbatch is."""
    if sequence_length > 1:
        return None
    if microbatch_size > 1:
        return "no sequence length in these costs, so no tokens/s"
    return "no workload in these costs: --microbatch-size, --model or a cost file's [workload] set one"
