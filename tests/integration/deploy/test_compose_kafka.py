"""docker-compose.yml's Kafka, without a container engine: what `elevate_local.compose
init` writes for the apache/kafka container (its server.properties, start.sh, setup.sh)
runs against the same Kafka release from Maven Central, with Kafka's own command-line
tools standing in for the image's /opt/kafka/bin (each the class its script runs). The
broker it makes is `make dev`'s: SASL_SSL + SCRAM-SHA-512 for every principal, deny by
default, and exactly the ACL table — so the admin principal creates the topics and a
service principal is refused what the table does not grant.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from elevate_core.kafka import acls
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import TopicsRefusedError, ensure_topics
from elevate_core.kafka.security import (
    KafkaEndpoint,
    KafkaSecurity,
    SaslMechanism,
    SecurityProtocol,
)
from elevate_local import compose, runs
from elevate_local.kafka import LOG4J2, _classpath
from elevate_local.kafka_admin import AdminTool
from elevate_local.ports import free_port, wait_for_port

# The scripts of the apache/kafka image this test stands in for, and the class each runs.
TOOLS = {
    "kafka-storage.sh": "kafka.tools.StorageTool",
    "kafka-server-start.sh": "kafka.Kafka",
    "kafka-acls.sh": "org.apache.kafka.tools.AclCommand",
    "kafka-broker-api-versions.sh": "org.apache.kafka.tools.BrokerApiVersionsCommand",
}


def kafka_bin(where: Path) -> Path:
    where.mkdir()
    (where / "log4j2.yaml").write_text(LOG4J2.replace("{level}", "WARN"))
    for script, main_class in TOOLS.items():
        path = where / script
        path.write_text(
            "#!/bin/bash\n"
            f'exec java -Xmx256m -Dlog4j2.configurationFile="{where}/log4j2.yaml" '
            f'-cp "{_classpath()}" {main_class} "$@"\n'
        )
        path.chmod(0o755)
    return where


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, dict[str, str]]]:
    base = tmp_path_factory.mktemp("compose")
    out = base / "shared"
    client, external, controller = free_port(), free_port(), free_port()
    compose.init(
        out, mount=str(out), ports=(client, external, controller), log_dir=str(base / "data")
    )
    env = {
        **os.environ,
        "KAFKA_BIN": str(kafka_bin(base / "bin")),
        # outside the compose network `kafka` does not resolve: the host's listener
        "KAFKA_BOOTSTRAP": f"localhost:{external}",
    }
    log = (base / "kafka.log").open("wb")
    broker = runs.spawn(
        [str(out / "kafka/start.sh")], name="compose-kafka", env=env, stdout=log, stderr=log
    )
    try:
        wait_for_port(external, timeout=90, what="the compose Kafka")
        yield out, external, env
    finally:
        broker.terminate()
        broker.wait(timeout=30)
        log.close()


def endpoint(out: Path, port: int, principal: str) -> KafkaEndpoint:
    return KafkaEndpoint(
        f"localhost:{port}",
        KafkaSecurity(
            protocol=SecurityProtocol.SASL_SSL,
            mechanism=SaslMechanism.SCRAM_SHA_512,
            username=principal,
            password_file=out / "credentials" / f"{principal}.password",
            ca_file=out / "tls" / "ca.pem",
        ),
    )


async def test_setup_puts_the_acl_table_on_the_broker_and_nothing_else(
    shared: tuple[Path, int, dict[str, str]], tmp_path: Path
) -> None:
    out, port, env = shared
    done = subprocess.run(
        [str(out / "kafka/setup.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    tool = AdminTool(
        bootstrap=f"localhost:{port}",
        client_properties=out / "kafka/admin.properties",
        classpath=_classpath(),
        log=tmp_path / "admin.log",
    )
    tool.start()
    try:
        held = {g for e in tool.acls() if (g := e.grant()) is not None}
        assert len(held) == len(tool.acls())  # no ACL outside the table's shape
    finally:
        tool.stop()
    assert held == set(acls.grants())

    # The admin principal creates the topics (as compose's `topics` service does) …
    created = await ensure_topics(endpoint(out, port, Principal.ADMIN.value))
    assert "elevate.requests.v1" in created
    # … while a service principal logs in but may not.
    with pytest.raises(TopicsRefusedError, match="approval may not create topics"):
        await ensure_topics(endpoint(out, port, Principal.APPROVAL.value), prefix="approval.")
