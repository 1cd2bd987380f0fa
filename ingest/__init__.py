"""The edge: answers each postback 200 once its raw body is durably in Kafka, 503 otherwise."""
