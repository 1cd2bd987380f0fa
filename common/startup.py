"""Start-up against a cluster that may not be reachable yet (a rollout racing Kafka's own).

Every service retries the same way: exponential back-off up to 5 s between attempts, for at
most KAFKA_STARTUP_TIMEOUT_SECONDS, then the last error propagates and the process exits for
its orchestrator to restart. Only connection-type errors are retried; a missing topic that
may not be created, say, needs a person and fails at once.
"""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_exponential,
)

from common.kafka import KafkaSettings

log = logging.getLogger(__name__)


def until_kafka_answers(kafka: KafkaSettings, *, forever: bool = False) -> AsyncRetrying:
    """Use as `async for attempt in until_kafka_answers(kafka): with attempt: ...`.

    `forever` is for a running service that must get its client back rather than exit.
    """
    return AsyncRetrying(
        stop=stop_never if forever else stop_after_delay(kafka.startup_timeout_s),
        wait=wait_exponential(multiplier=0.2, max=5),
        retry=retry_if_exception_type((KafkaError, OSError)),
        before_sleep=lambda state: log.warning(
            "Kafka not reachable yet, retrying",
            extra={"fields": {"attempt": state.attempt_number}},
        ),
        reraise=True,
    )
