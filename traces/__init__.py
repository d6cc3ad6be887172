"""One trace format for predicted (simulator) and measured (executor) runs: schema, io, metrics, Chrome
export. Standard library only (see traces/README.md)."""
