"""Write a realistic CloudTrail log file for one Identity Center session, with its notice.

`make simulate-activity USER=alice ACCOUNT=<id or name> PERMISSION_SET=AdministratorAccess`
puts, into the local trail bucket (moto, `make dev`), a gzip file under
`AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/<acct>_CloudTrail_<region>_<ts>_<rand>.json.gz`
holding the session's `AssumeRoleWithSAML` sign-in and a few calls made with the role, and
sends CloudTrail's SNS notice (`{"s3Bucket": …, "s3ObjectKey": [ … ]}`) to the notice queue.

The record builders are plain functions so tests and the benchmark use the same records.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import secrets
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

DEFAULT_BUCKET = "elevate-cloudtrail"
DEFAULT_QUEUE = "elevate-cloudtrail-notices"
CLI_AGENT = (
    "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#6.5.0 md/arch#x86_64 lang/python#3.11.8"
)
CONSOLE_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Safari/537.36"
)
# (eventSource, eventName, readOnly, requestParameters)
DEFAULT_CALLS: tuple[tuple[str, str, bool, dict[str, Any] | None], ...] = (
    ("sts.amazonaws.com", "GetCallerIdentity", True, None),
    ("s3.amazonaws.com", "ListBuckets", True, {"Host": "s3.amazonaws.com"}),
    ("ec2.amazonaws.com", "DescribeInstances", True, {"instancesSet": {}, "filterSet": {}}),
    ("iam.amazonaws.com", "ListRoles", True, {"maxItems": 100}),
)


def role_hash(account_id: str, permission_set: str) -> str:
    return hashlib.sha256(f"{account_id}/{permission_set}".encode()).hexdigest()[:16]


def role_arn(account_id: str, permission_set: str, *, region: str | None = None) -> str:
    path = "aws-reserved/sso.amazonaws.com/" + (f"{region}/" if region else "")
    name = f"AWSReservedSSO_{permission_set}_{role_hash(account_id, permission_set)}"
    return f"arn:aws:iam::{account_id}:role/{path}{name}"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _role_id(account_id: str, permission_set: str) -> str:
    digest = hashlib.sha256(f"role/{account_id}/{permission_set}".encode()).hexdigest()
    return "AROA" + base64.b32encode(bytes.fromhex(digest[:26])).decode()[:17]


def _access_key() -> str:
    return "ASIA" + base64.b32encode(secrets.token_bytes(10)).decode()[:16]


def _saml_provider_arn(account_id: str) -> str:
    provider = f"arn:aws:iam::{account_id}:saml-provider/AWSSSO_{role_hash(account_id, 'p')}"
    return provider + "_DO_NOT_DELETE"


def _saml_response(
    *, account_id: str, permission_set: str, region: str, session: str, idp: str, at: datetime
) -> dict[str, Any]:
    """AssumeRoleWithSAML's responseElements: the role session's credentials and user."""
    role_name = role_arn(account_id, permission_set).rsplit("/", 1)[1]
    return {
        "credentials": {
            "accessKeyId": _access_key(),
            "sessionToken": "IQoJb3JpZ2luX2VjE" + secrets.token_hex(24),
            "expiration": (at + timedelta(hours=1)).strftime("%b %d, %Y, %I:%M:%S %p"),
        },
        "assumedRoleUser": {
            "assumedRoleId": f"{_role_id(account_id, permission_set)}:{session}",
            "arn": f"arn:aws:sts::{account_id}:assumed-role/{role_name}/{session}",
        },
        "subject": session,
        "subjectType": "persistent",
        "issuer": f"https://portal.sso.{region}.amazonaws.com/saml/assertion/{idp}",
        "audience": "https://signin.aws.amazon.com/saml",
    }


def sign_in_record(
    *,
    user: str,
    account_id: str,
    permission_set: str,
    at: datetime,
    region: str = "us-east-1",
    session_name: str | None = None,
    source_ip: str = "203.0.113.10",
) -> dict[str, Any]:
    """The member account's `AssumeRoleWithSAML` when Identity Center signs a user in."""
    session = (session_name or user)[:64]
    arn = role_arn(account_id, permission_set)
    provider = _saml_provider_arn(account_id)
    idp = base64.b64encode(hashlib.sha256(account_id.encode()).digest()).decode()[:28]
    return {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "SAMLUser",
            "principalId": f"{idp}:{session}",
            "userName": session,
            "identityProvider": idp,
        },
        "eventTime": _iso(at),
        "eventSource": "sts.amazonaws.com",
        "eventName": "AssumeRoleWithSAML",
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "userAgent": "aws-internal/3 aws-sdk-java/1.12.655",
        "requestParameters": {
            "sAMLAssertionID": "_" + uuid.uuid4().hex,
            "roleSessionName": session,
            "roleArn": arn,
            "principalArn": provider,
            "durationSeconds": 3600,
        },
        "responseElements": _saml_response(
            account_id=account_id,
            permission_set=permission_set,
            region=region,
            session=session,
            idp=idp,
            at=at,
        ),
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": True,
        "resources": [
            {"accountId": account_id, "type": "AWS::IAM::Role", "ARN": arn},
            {"accountId": account_id, "type": "AWS::IAM::SAMLProvider", "ARN": provider},
        ],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account_id,
        "eventCategory": "Management",
    }


def _assumed_role_identity(
    *,
    account_id: str,
    permission_set: str,
    session: str,
    created: datetime,
    access_key: str,
    console: bool,
    on_behalf_of_user_id: str | None,
) -> dict[str, Any]:
    """The userIdentity of a call made with an Identity Center role session."""
    arn = role_arn(account_id, permission_set)
    role_name = arn.rsplit("/", 1)[1]
    role_id = _role_id(account_id, permission_set)
    identity: dict[str, Any] = {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{session}",
        "arn": f"arn:aws:sts::{account_id}:assumed-role/{role_name}/{session}",
        "accountId": account_id,
        "accessKeyId": access_key,
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": role_id,
                "arn": arn,
                "accountId": account_id,
                "userName": role_name,
            },
            "webIdFederationData": {},
            "attributes": {"creationDate": _iso(created), "mfaAuthenticated": "false"},
        },
    }
    if on_behalf_of_user_id:
        identity["onBehalfOf"] = {
            "userId": on_behalf_of_user_id,
            "identityStoreArn": "arn:aws:identitystore::" + account_id + ":identitystore/d-1",
        }
    if console:
        identity["sessionContext"]["sourceIdentity"] = session
    return identity


def call_record(
    *,
    user: str,
    account_id: str,
    permission_set: str,
    at: datetime,
    event_source: str,
    event_name: str,
    read_only: bool = True,
    request_parameters: dict[str, Any] | None = None,
    region: str = "us-east-1",
    session_name: str | None = None,
    console: bool = False,
    source_ip: str = "203.0.113.10",
    session_start: datetime | None = None,
    access_key: str | None = None,
    on_behalf_of_user_id: str | None = None,
    error_code: str | None = None,
) -> dict[str, Any]:
    """One call made with an Identity Center role session (userIdentity AssumedRole)."""
    identity = _assumed_role_identity(
        account_id=account_id,
        permission_set=permission_set,
        session=(session_name or user)[:64],
        created=session_start or at,
        access_key=access_key or _access_key(),
        console=console,
        on_behalf_of_user_id=on_behalf_of_user_id,
    )
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": _iso(at),
        "eventSource": event_source,
        "eventName": event_name,
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "userAgent": CONSOLE_AGENT if console else CLI_AGENT,
        "requestParameters": request_parameters,
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account_id,
        "eventCategory": "Management",
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": event_source,
        },
    }
    if console:
        record["sessionCredentialFromConsole"] = "true"
    if error_code:
        record["errorCode"] = error_code
        record["errorMessage"] = f"User is not authorized to perform {event_name}"
    return record


def session_records(
    *,
    user: str,
    account_id: str,
    permission_set: str,
    start: datetime,
    region: str = "us-east-1",
    console: bool = False,
    calls: Sequence[tuple[str, str, bool, dict[str, Any] | None]] = DEFAULT_CALLS,
    session_name: str | None = None,
) -> list[dict[str, Any]]:
    """A sign-in followed by `calls`, one every 20 seconds, with one access key."""
    records = [
        sign_in_record(
            user=user,
            account_id=account_id,
            permission_set=permission_set,
            at=start,
            region=region,
            session_name=session_name,
        )
    ]
    key = _access_key()
    for n, (source, name, read_only, params) in enumerate(calls, start=1):
        records.append(
            call_record(
                user=user,
                account_id=account_id,
                permission_set=permission_set,
                at=start + timedelta(seconds=20 * n),
                event_source=source,
                event_name=name,
                read_only=read_only,
                request_parameters=params,
                region=region,
                session_name=session_name,
                console=console,
                session_start=start,
                access_key=key,
            )
        )
    return records


def trail_key(account_id: str, region: str, at: datetime) -> str:
    at = at.astimezone(UTC)
    stamp = at.strftime("%Y%m%dT%H%MZ")
    rand = secrets.token_hex(8)
    return (
        f"AWSLogs/{account_id}/CloudTrail/{region}/{at:%Y/%m/%d}/"
        f"{account_id}_CloudTrail_{region}_{stamp}_{rand}.json.gz"
    )


def gzip_records(records: Sequence[dict[str, Any]]) -> bytes:
    return gzip.compress(json.dumps({"Records": list(records)}).encode())


def sns_notice(bucket: str, keys: Sequence[str], *, topic_arn: str | None = None) -> str:
    """The SQS body of CloudTrail's SNS notification (raw message delivery off)."""
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic_arn or "arn:aws:sns:us-east-1:000000000000:elevate-cloudtrail",
            "Message": json.dumps({"s3Bucket": bucket, "s3ObjectKey": list(keys)}),
            "Timestamp": _iso(datetime.now(UTC)),
            "SignatureVersion": "1",
        }
    )


def deliver(
    s3: S3Client,
    sqs: SQSClient,
    *,
    bucket: str,
    queue_url: str,
    account_id: str,
    records: Sequence[dict[str, Any]],
    region: str = "us-east-1",
    at: datetime | None = None,
    body: bytes | None = None,
) -> str:
    """Put one log file (or `body` as given) and send its notice; returns the object key."""
    key = trail_key(account_id, region, at or datetime.now(UTC))
    s3.put_object(Bucket=bucket, Key=key, Body=body if body is not None else gzip_records(records))
    sqs.send_message(QueueUrl=queue_url, MessageBody=sns_notice(bucket, [key]))
    return key


def _resolve_account(endpoint_url: str, region: str, account: str) -> str:
    if account.isdigit() and len(account) == 12:
        return account
    org = boto3.client(
        "organizations",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's dummy key
    )
    for page in org.get_paginator("list_accounts").paginate():
        for acct in page["Accounts"]:
            if acct.get("Name") == account:
                return str(acct["Id"])
    raise SystemExit(f"simulate-activity: no account named {account!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", required=True, help="Identity Store UserName (session name)")
    parser.add_argument("--account", required=True, help="12-digit account id or account name")
    parser.add_argument("--permission-set", required=True)
    parser.add_argument("--endpoint-url", default="http://127.0.0.1:5000")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--bucket", default=DEFAULT_BUCKET)
    parser.add_argument("--queue", default=DEFAULT_QUEUE, help="queue name or URL")
    parser.add_argument("--console", action="store_true", help="a console session (else CLI)")
    parser.add_argument(
        "--minutes-ago", type=float, default=0.0, help="when the session started (default now)"
    )
    args = parser.parse_args(argv)
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's dummy key
        region_name=args.region,
    )
    s3 = session.client("s3", endpoint_url=args.endpoint_url)
    sqs = session.client("sqs", endpoint_url=args.endpoint_url)
    account_id = _resolve_account(args.endpoint_url, args.region, args.account)
    queue_url = args.queue
    if not queue_url.startswith(("http://", "https://")):
        queue_url = sqs.get_queue_url(QueueName=args.queue)["QueueUrl"]
    start = datetime.now(UTC) - timedelta(minutes=args.minutes_ago)
    records = session_records(
        user=args.user,
        account_id=account_id,
        permission_set=args.permission_set,
        start=start,
        region=args.region,
        console=args.console,
    )
    key = deliver(
        s3,
        sqs,
        bucket=args.bucket,
        queue_url=queue_url,
        account_id=account_id,
        records=records,
        region=args.region,
        at=start,
    )
    print(f"s3://{args.bucket}/{key}: {len(records)} records for {args.user} in {account_id}")
    for record in records:
        print(f"  {record['eventTime']} {record['eventName']} {record['eventID']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
