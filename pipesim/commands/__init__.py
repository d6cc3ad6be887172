"""One module per `pipesim` subcommand, each exposing `register(subparsers)`."""
