"""What the tests and the benchmarks both use: realistic traffic, sample postbacks, Kafka
helpers that write and read topics back, the services as processes, and the fault drills.
Neither `tests` nor `bench` imports the other."""
