"""The JetStream queue's layout: the names and shapes of its streams and consumers.

Every process derives the same names from the same ``Topology``: a stream per stage
(``<PREFIX>_<STAGE>``) taking the subjects ``<prefix>.<stage>.<lane>.<partition>``, a
dead-letter stream, and a durable pull consumer per (stage, lane, partition). Creating
them is idempotent, so every process does it when it starts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Collection, Mapping

from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError

log = logging.getLogger(__name__)

LANES = (0, 1, 2, 3)
DUPLICATE_WINDOW = dt.timedelta(minutes=2)
DEAD_LETTER_AGE = dt.timedelta(days=30)


@dataclasses.dataclass(frozen=True)
class Topology:
    """Names and sizes of the streams and consumers; the same in every process."""

    prefix: str
    stages: Mapping[str, str]
    """job kind → stage (the stream it travels on)."""
    partitions: int
    replicas: int
    ack_wait: dt.timedelta
    max_deliver: int

    @property
    def stage_names(self) -> list[str]:
        return sorted(set(self.stages.values()))

    def stream(self, stage: str) -> str:
        return f"{self.prefix}_{stage}".upper().replace("-", "_")

    @property
    def dead_stream(self) -> str:
        return self.stream("dead")

    def subject(self, stage: str, lane: int, partition: int) -> str:
        return f"{self.prefix}.{stage}.{lane}.{partition}"

    def consumer(self, stage: str, lane: int, partition: int) -> str:
        return f"{stage}-{lane}-{partition}"

    def stage_of(self, kind: str) -> str:
        stage = self.stages.get(kind)
        if stage is None:
            raise KeyError(f"job kind {kind!r} belongs to no stage")
        return stage


async def ensure_streams(js: JetStreamContext, topology: Topology) -> None:
    """Create the stage streams and the dead-letter stream, or update them to this shape."""
    configs = [
        api.StreamConfig(
            name=topology.stream(stage),
            subjects=[f"{topology.prefix}.{stage}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=topology.replicas,
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        )
        for stage in topology.stage_names
    ]
    configs.append(
        api.StreamConfig(
            name=topology.dead_stream,
            subjects=[f"{topology.prefix}.dead.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            num_replicas=topology.replicas,
            max_age=DEAD_LETTER_AGE.total_seconds(),
        )
    )
    for config in configs:
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)


async def ensure_consumers(
    js: JetStreamContext, topology: Topology, stages: Collection[str], lanes: Collection[int]
) -> None:
    """Create the durable consumers of ``stages`` and ``lanes``, one per partition; one
    that exists already is kept as it is."""
    for stage in stages:
        for lane in lanes:
            for partition in range(topology.partitions):
                config = _consumer_config(topology, stage, lane, partition)
                try:
                    await js.add_consumer(topology.stream(stage), config)
                except BadRequestError as exc:
                    # It exists with another shape (an older ack_wait, say): keep it.
                    log.warning("consumer %s kept as it is: %s", config.durable_name, exc)


def _consumer_config(
    topology: Topology, stage: str, lane: int, partition: int
) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=topology.consumer(stage, lane, partition),
        filter_subject=topology.subject(stage, lane, partition),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=topology.ack_wait.total_seconds(),
        max_deliver=topology.max_deliver,
        max_ack_pending=20_000,
        num_replicas=topology.replicas,
    )
