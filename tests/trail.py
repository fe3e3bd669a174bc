"""A CloudTrail trail in moto for tests: a bucket and the notice queue audit-ingest reads,
one per test or stack; `deliver` writes a log file and its notice as CloudTrail would
(`elevate_local.simulate_activity`, the module behind `make simulate-activity`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

import boto3
from elevate_local.simulate_activity import deliver

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


@dataclass
class Trail:
    s3: S3Client
    sqs: SQSClient
    bucket: str
    queue: str  # the queue's name (what ELEVATE_CLOUDTRAIL_QUEUE takes)
    queue_url: str

    @classmethod
    def create(
        cls, endpoint_url: str, *, key_id: str | None = None, secret: str | None = None
    ) -> Self:
        """A new bucket and queue, both named `trail-<random>`."""
        session = boto3.session.Session(
            region_name="us-east-1", aws_access_key_id=key_id, aws_secret_access_key=secret
        )
        s3 = session.client("s3", endpoint_url=endpoint_url)
        sqs = session.client("sqs", endpoint_url=endpoint_url)
        name = f"trail-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=name)
        return cls(s3, sqs, name, name, sqs.create_queue(QueueName=name)["QueueUrl"])

    def delete_queue(self) -> None:
        self.sqs.delete_queue(QueueUrl=self.queue_url)

    def queued(self) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def deliver(
        self,
        records: Sequence[dict[str, Any]],
        *,
        account_id: str,
        bucket: str | None = None,
        at: datetime | None = None,
        body: bytes | None = None,
    ) -> str:
        """One log file of `account_id`'s trail (or `body` as given) and its notice, as
        CloudTrail delivers them; returns the object key."""
        return deliver(
            self.s3,
            self.sqs,
            bucket=bucket or self.bucket,
            queue_url=self.queue_url,
            account_id=account_id,
            records=records,
            at=at,
            body=body,
        )
