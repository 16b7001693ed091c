"""poolmon benchmarks: each module compares poolmon against its peers in one run and prints ratios.

Run ``python -m benchmarks`` to list them, ``python -m benchmarks NAME [options]`` to run one,
``python -m benchmarks all`` to run every one. Each module defines ``main(argv) -> int``.
"""
