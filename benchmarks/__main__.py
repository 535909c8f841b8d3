"""`python -m benchmarks --output docs`: the compression bench, then the serving and monitoring benches."""

from benchmarks.compression import main

main()
