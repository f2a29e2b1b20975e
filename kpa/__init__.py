"""The `kpa` command line: one subcommand per component; `kpa up` is the shell of ``localbackend``."""
