"""Helpers shared by the tests and the benchmarks: a small trained ECA model on real digits, the official ECA forward."""
