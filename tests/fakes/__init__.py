"""Loopback fake servers that speak the providers' real wire protocols, with faults on
command. Used by the provider tests and by `loadtest/bench_providers.py`; never by the
server at run time."""
