"""What the tests and the benchmarks share: services as processes, fault drills, traffic."""
