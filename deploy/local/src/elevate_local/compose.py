"""`python -m elevate_local.compose init DIR`: what docker-compose.yml needs before its
Kafka and services start, made as `make dev` makes it, on the volume the containers share
(mounted at `/shared`):

- `tls/`: the private CA and the broker's certificate (SANs `kafka`, `localhost`,
  `127.0.0.1`), as `elevate_local.tls` makes them; `mail-tls/` the same for the mailbox;
- `credentials/<principal>.password`: a SCRAM password per principal of the ACL table, and
  the broker's own;
- `keys/`: the event-signing keys (one Ed25519 key per writer, the public directory);
- `kafka/server.properties`: the apache/kafka image's broker, secured as `make dev`'s
  (`elevate_local.kafka.broker_properties`: SASL_SSL + SCRAM-SHA-512, deny by default);
- `kafka/start.sh`: formats the log dir once, with every principal's SCRAM credential,
  then runs the broker; `kafka/setup.sh`: the ACL table (`acls.grants()`) through Kafka's
  own `kafka-acls.sh`; `kafka/admin.properties`: the broker's client config for both.

A second run keeps what exists (passwords, keys, certificate) and rewrites the rest. The
files are readable by every container of the project (the Kafka image's user and
Elevate's differ): a local trial's secrets, on a volume only this project mounts —
production takes them from a secret store (docs/install.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from elevate_core.kafka import acls

from elevate_local.event_keys import LocalEventKeys
from elevate_local.kafka import SCRAM, SUPERUSER, broker_properties
from elevate_local.tls import BrokerTls, password

MOUNT = "/shared"
CLIENT_PORT = 19092  # the containers' listener (advertised as kafka:19092)
EXTERNAL_PORT = 9092  # the host's, as in `make dev` (advertised as localhost:9092)
CONTROLLER_PORT = 9093
RESOURCE_FLAGS = {"TOPIC": "--topic", "GROUP": "--group", "TRANSACTIONAL_ID": "--transactional-id"}


def principals() -> list[str]:
    return [SUPERUSER, *(p.value for p in acls.Principal)]


def init(
    out: Path,
    *,
    mount: str = MOUNT,
    ports: tuple[int, int, int] = (CLIENT_PORT, EXTERNAL_PORT, CONTROLLER_PORT),
    log_dir: str = "/var/lib/kafka/data",
) -> None:
    """Everything under `out`, naming itself as the containers see it (`mount`); `ports`
    (client, external, controller) and `log_dir` as the apache/kafka container has them."""
    client, external, controller = ports
    tls = BrokerTls(out / "tls", hosts=("kafka",)).ensure()
    BrokerTls(out / "mail-tls", hosts=("mailbox",)).ensure()  # the mailbox's STARTTLS
    secrets = {name: password(out / "credentials" / f"{name}.password") for name in principals()}
    LocalEventKeys.ensure(out / "keys")
    kafka = out / "kafka"
    kafka.mkdir(parents=True, exist_ok=True)
    inside = f"{mount}/tls"
    props = {
        "controller.quorum.bootstrap.servers": f"localhost:{controller}",
        "listeners": f"CLIENT://:{client},EXTERNAL://:{external},"
        f"CONTROLLER://localhost:{controller}",
        "advertised.listeners": f"CLIENT://kafka:{client},EXTERNAL://localhost:{external}",
        **broker_properties(
            secret=secrets[SUPERUSER],
            keystore=f"{inside}/{tls.keystore_file.name}",
            truststore=f"{inside}/{tls.ca_file.name}",
            client_listeners=["CLIENT", "EXTERNAL"],
        ),
        "log.dirs": log_dir,
    }
    _write(kafka / "server.properties", "".join(f"{k}={v}\n" for k, v in props.items()))
    _write(kafka / "admin.properties", admin_properties(secrets[SUPERUSER], inside))
    _write(kafka / "start.sh", start_script(mount), executable=True)
    _write(kafka / "setup.sh", setup_script(mount, client), executable=True)
    _open_up(out)


def admin_properties(secret: str, tls_dir: str) -> str:
    return (
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        f'sasl.jaas.config={SCRAM} required username="{SUPERUSER}" password="{secret}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={tls_dir}/ca.pem\n"
    )


def start_script(mount: str) -> str:
    scram = " ".join(
        f'--add-scram "SCRAM-SHA-512=[name={name},password=$(cat {mount}/credentials/'
        f'{name}.password)]"'
        for name in principals()
    )
    return f"""#!/bin/bash
# The apache/kafka container's command (made by elevate_local.compose): format the log dir
# once, with every principal's SCRAM credential, then run the broker.
set -euo pipefail
BIN="${{KAFKA_BIN:-/opt/kafka/bin}}"
CONFIG="${{KAFKA_CONFIG:-{mount}/kafka/server.properties}}"
"$BIN/kafka-storage.sh" format --standalone --ignore-formatted \
  -t "$("$BIN/kafka-storage.sh" random-uuid)" -c "$CONFIG" \
  {scram}
exec "$BIN/kafka-server-start.sh" "$CONFIG"
"""


def acl_commands() -> list[list[str]]:
    """`kafka-acls.sh` arguments adding `acls.grants()`: one call per principal, resource
    type, pattern and set of operations (a call adds every operation on every name)."""
    operations: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
    for g in acls.grants():
        operations[(g.principal.value, g.resource, g.pattern, g.name)].add(g.operation)
    names: dict[tuple[str, str, str, frozenset[str]], list[str]] = defaultdict(list)
    for (principal, resource, pattern, name), wanted in sorted(operations.items()):
        names[(principal, resource, pattern, frozenset(wanted))].append(name)
    commands = []
    for (principal, resource, pattern, ops), resources in sorted(
        names.items(), key=lambda item: (item[0][:3], sorted(item[0][3]))
    ):
        argv = ["--add", "--allow-principal", f"User:{principal}"]
        for op in sorted(ops):  # the tool's spelling: DescribeConfigs, not DESCRIBE_CONFIGS
            argv += ["--operation", op.title().replace("_", "")]
        for name in resources:
            argv += [RESOURCE_FLAGS[resource], name]
        argv += ["--resource-pattern-type", pattern.lower()]
        commands.append(argv)
    return commands


def setup_script(mount: str, client_port: int = CLIENT_PORT) -> str:
    calls = "\n".join("acl " + " ".join(shlex.quote(a) for a in argv) for argv in acl_commands())
    return f"""#!/bin/bash
# Run once the broker is up (made by elevate_local.compose): the ACL table, as `make dev`
# applies it (elevate_core.kafka.acls), through Kafka's own kafka-acls.sh.
set -euo pipefail
BIN="${{KAFKA_BIN:-/opt/kafka/bin}}"
BOOTSTRAP="${{KAFKA_BOOTSTRAP:-kafka:{client_port}}}"
ADMIN="${{KAFKA_ADMIN_CONFIG:-{mount}/kafka/admin.properties}}"
CONNECT=(--bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN")
# A JVM per call (~1 s each): four at a time; any failure fails the script.
acl() {{
  "$BIN/kafka-acls.sh" "${{CONNECT[@]}}" "$@" >/dev/null &
  if [ "$(jobs -rp | wc -l)" -ge 4 ]; then wait -n; fi
}}
for attempt in $(seq 1 60); do
  "$BIN/kafka-broker-api-versions.sh" "${{CONNECT[@]}}" >/dev/null 2>&1 && break
  [ "$attempt" = 60 ] && {{ echo "setup: Kafka at $BOOTSTRAP did not answer" >&2; exit 1; }}
  sleep 2
done
{calls}
for job in $(jobs -p); do wait "$job"; done
echo "setup: the ACL table is on the broker"
"""


def _write(path: Path, text: str, *, executable: bool = False) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755 if executable else 0o644)


def _open_up(out: Path) -> None:
    """Readable by the project's other containers (see the module's docstring)."""
    for root, _dirs, files in os.walk(out):
        Path(root).chmod(0o755)
        for name in files:
            path = Path(root) / name
            path.chmod(path.stat().st_mode | 0o444)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elevate_local.compose")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("init", help="write what docker-compose.yml's containers need")
    make.add_argument("directory", type=Path)
    make.add_argument("--mount", default=MOUNT, help="where the containers see it")
    args = parser.parse_args(argv)
    init(args.directory, mount=args.mount)
    print(f"compose: {args.directory} ready for Kafka and the services")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
