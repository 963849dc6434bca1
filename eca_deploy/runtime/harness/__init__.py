"""The harness: parity against a reference, benchmarks, device description and reports."""
