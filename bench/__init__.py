"""Benchmarks of the whole service: `python -m bench` (or `make bench`).

It starts its own tritonserver and gateway (separate processes, as in production)
on free loopback ports, drives them with espeak-ng speech, and writes every figure
of one run to `bench/results/latest.json` plus a dated copy.
"""
