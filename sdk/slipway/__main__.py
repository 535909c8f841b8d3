"""`python -m slipway ...` is the `slipway` command (used where a subprocess must run this very interpreter)."""

from slipway.cli.main import main

main()
