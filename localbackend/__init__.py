"""The local backend: pods as local processes (spawn, probe, drain, capacity cap) and the embedded
stack `kpa up` runs — the autoscaler service, the activator and an entry point in one process.

It imports nothing from ``kpa`` (the command line is its shell, not the other way round).
"""
