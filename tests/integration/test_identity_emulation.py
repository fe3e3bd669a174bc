"""The Identity Store's ExternalIds as `make dev` and the tests have them (moto stores none,
so the AWS proxy emulates them), read through the directory request-api binds users with."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError
from elevate_core.directory.aws import Directory
from elevate_core.directory.errors import UserNotFoundError
from elevate_core.directory.identity import UserKey
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.moto_seed import SeededOrganisation, seed_organisation
from elevate_local.seed_data import external_id

pytestmark = pytest.mark.integration
ISSUER = "https://idp.example"


@pytest.fixture(scope="module")
def seeded(moto_endpoint: str) -> SeededOrganisation:
    return seed_organisation(moto_endpoint)


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[AwsFaultProxy]:
    p = AwsFaultProxy(moto_endpoint)
    p.external_ids.link_seeded(ISSUER)
    p.start()
    yield p
    p.stop()


async def test_a_seeded_user_is_found_by_their_external_id(
    proxy: AwsFaultProxy, seeded: SeededOrganisation
) -> None:
    directory = Directory.from_region(region="us-east-1", endpoint_url=proxy.endpoint_url)
    carol = await directory.find_user(UserKey("externalId", external_id("carol"), ISSUER))
    assert (carol.user_name, carol.user_id) == ("carol", seeded.user_ids["carol"])
    assert "auditors" in carol.groups
    with pytest.raises(UserNotFoundError):
        await directory.find_user(UserKey("externalId", external_id("carol"), "https://other"))
    with pytest.raises(UserNotFoundError):
        await directory.find_user(UserKey("externalId", "no-such-subject", ISSUER))


def test_describe_user_carries_the_external_ids(
    proxy: AwsFaultProxy, seeded: SeededOrganisation
) -> None:
    ids = boto3.client("identitystore", endpoint_url=proxy.endpoint_url, region_name="us-east-1")
    store = seeded.identity_store_id
    user_id = ids.get_user_id(
        IdentityStoreId=store,
        AlternateIdentifier={"ExternalId": {"Issuer": ISSUER, "Id": external_id("bob")}},
    )["UserId"]
    assert user_id == seeded.user_ids["bob"]
    described = ids.describe_user(IdentityStoreId=store, UserId=user_id)
    assert described["ExternalIds"] == [{"Issuer": ISSUER, "Id": external_id("bob")}]
    with pytest.raises(ClientError) as caught:
        ids.get_user_id(
            IdentityStoreId=store,
            AlternateIdentifier={"ExternalId": {"Issuer": ISSUER, "Id": "bob"}},
        )
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
