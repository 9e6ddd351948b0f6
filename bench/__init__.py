"""tickwire's engine benchmarks: the AF_XDP engine against a tuned C kernel-socket receiver and a
plain Python one, on one veth pair between two network namespaces, in one run.

`make bench` (python -m bench.run) writes bench/results/latest.{json,md,png}; see bench/run.py.
"""
