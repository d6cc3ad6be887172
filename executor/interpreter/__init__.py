"""One rank's program and the interpreter that runs it.

    program.build_plans(schedule, ...)    the rank's ops: the schedule's actions plus the executor's own
                                          (validation, NORM, CUT), and what follows from them statically
    entries.compile_entries(plan, ...)    what the interpreter decides per op before the first one runs
    runtime.Runtime(..., hooks, restore)  the loop: one short handler per kind of op

The handlers lean on compute (a forward's weights and graph, each backward), stage and versions (the
weight versions a stage holds), weightgrad (the I/W split), comm (sends and receives), gradnorm (the
global norm), ledger (which update each gradient joins), memory (the bytes held), validation (the
validation forwards); hooks holds what a runtime is built from (settings, hooks, a restore value).
"""
