"""Topic settings: durability follows the replication factor unless set explicitly."""

from __future__ import annotations

import pytest

from common.env import SettingsError
from common.topics import TopicSettings


def test_three_replicas_mean_two_in_sync_by_default() -> None:
    """Production's replication factor of 3 gets min.insync.replicas=2 on every topic."""
    topics = TopicSettings.from_environ({})
    assert {spec.min_insync_replicas for spec in topics.all()} == {2}
    assert topics.raw.new_topic().topic_configs["min.insync.replicas"] == "2"


@pytest.mark.parametrize(("replicas", "expected"), [("1", 1), ("2", 1), ("5", 2)])
def test_fewer_replicas_keep_writes_going_with_one_broker_down(
    replicas: str, expected: int
) -> None:
    """With two replicas, requiring both would refuse every write while one broker is down."""
    topics = TopicSettings.from_environ({"KAFKA_TOPIC_REPLICATION_FACTOR": replicas})
    assert topics.raw.min_insync_replicas == expected


def test_min_insync_replicas_above_the_replication_factor_is_refused() -> None:
    """A setting that no write could ever satisfy fails at start-up, naming the variable."""
    with pytest.raises(SettingsError, match="KAFKA_TOPIC_MIN_INSYNC_REPLICAS"):
        TopicSettings.from_environ(
            {"KAFKA_TOPIC_REPLICATION_FACTOR": "3", "KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "4"}
        )
