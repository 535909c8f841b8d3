"""Benchmarks (`make bench`): what compression, serving, monitoring and DDP buy, measured on this machine.

Outside the installed library on purpose: they import the library, never the other way round.
"""
