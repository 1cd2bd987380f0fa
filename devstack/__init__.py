"""The development stack (`make run`) and the local Kafka broker that tests and benchmarks use."""

from typing import Final

# The pseudonym key of `make run`, the tests and the benchmarks. Not a secret: it is published
# here, so pseudonyms made with it protect nothing. Production sets its own
# EVENTS_PSEUDONYM_KEY from a Secret (docs/events.md, "Privacy").
DEVELOPMENT_PSEUDONYM_KEY: Final = "development-only-not-a-secret-pseudonym-key"
