"""`python -m benchmarks --output docs`: the compression bench, then the serving, monitoring and loop benches."""

from benchmarks.compression import main

main()
