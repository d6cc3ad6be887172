"""A large trace as arrays: read, checked and measured without an object per event.

    from traces.io import read_trace
    from traces.columnar import columns_of
    trace = read_trace("big.json")      # events held as columns (traces.columnar.columns.ColumnEvents)
    columns_of(trace).start             # float64 array, one entry per event

traces.io reads plain files into columns (parse.py) and checks them as traces.io.check_events does
(check.py); traces.metrics and traces.compare compute from the columns (metrics.py, compare.py) what
they compute from Event objects for a trace built in memory, to the bit. Anything unusual (a field that
is not plain, a trace that fails a check) takes the Event path, which names the problem, so both paths
read, refuse and measure every trace alike; tests/traces/test_columnar.py holds them to that.
"""

from traces.columnar.columns import ColumnEvents, EventColumns, columns_of

__all__ = ["ColumnEvents", "EventColumns", "columns_of"]
