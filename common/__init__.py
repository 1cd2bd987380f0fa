"""Pieces every service shares: settings from the environment, Kafka access, topics, logs."""
