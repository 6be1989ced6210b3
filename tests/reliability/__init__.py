"""Helpers of the reliability, load and fuzz tests: throwaway Triton models, process probes."""
