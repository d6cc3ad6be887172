"""The `pipesim` command (pipesim.cli); subcommands live in pipesim/commands/."""
