"""One trace format for predicted (simulator) and measured (executor) runs: schema, io, metrics, Chrome
export. Standard library and schedules only (see traces/README.md)."""
