"""What the tests and the benchmarks both use: realistic traffic, sample postbacks, and Kafka
helpers that write and read topics back. Neither `tests` nor `bench` imports the other."""
