"""The `kpa` command line and the embedded local stack that wires the components together."""
