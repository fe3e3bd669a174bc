# Elevate — the two commands a newcomer needs are `make dev` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
UV := uv run --frozen
USER ?= alice
AS ?= siem
TOPIC ?= elevate.audit.v1

.PHONY: dev test lint token install schemas simulate-activity kafka-tail chart-check chart-e2e

install:
	@bash scripts/bootstrap.sh

## Run the whole system locally: Kafka, moto (seeded), OIDC, the four services (SQLite).
## The supervisor runs as make's own child (no uv in between), so it stops with make.
dev: install
	@exec .venv/bin/elevate-dev

## Run the test suite against its own Kafka, PostgreSQL and moto on free ports.
test:
	@bash scripts/bootstrap.sh --with-postgres
	@$(UV) pytest $(PYTEST_ARGS)

## ruff + mypy --strict + hadolint (the Dockerfile)
lint:
	@$(UV) ruff check .
	@$(UV) ruff format --check .
	@$(UV) mypy
	@$(UV) hadolint Dockerfile

## The Helm chart's checks (CI): lint, kubeconform, helm-unittest, checkov, kube-score, settings,
## and --dry-run=server on a live kube-apiserver. Tools build once into ~/.cache/elevate/tools.
chart-check: install
	@bash scripts/chart-check.sh

## Install the chart for real on kube-apiserver + etcd with kwok fake nodes (not in make test).
chart-e2e: install
	@bash scripts/chart-e2e.sh

## Print a bearer token for a seeded user: make token USER=alice
token:
	@PYTHONWARNINGS=ignore $(UV) python -m elevate_local.oidc token --issuer http://127.0.0.1:9400 --user $(USER)

## Regenerate docs/events/*.json from the event models
schemas:
	@$(UV) python -m elevate_core.events.schemas docs/events

## Write a realistic CloudTrail file (sign-in + calls) and its SQS notice into the local trail bucket:
## make simulate-activity USER=alice ACCOUNT=<id or name> PERMISSION_SET=AdministratorAccess
simulate-activity:
	@$(UV) python -m elevate_local.simulate_activity --user $(USER) --account $(ACCOUNT) --permission-set $(PERMISSION_SET)

## Read a topic of `make dev`'s broker from its start, authenticated as a principal (its ACLs
## apply): make kafka-tail TOPIC=elevate.audit.v1 AS=siem
kafka-tail:
	@java -cp 'deploy/local/kafka/lib/*' -Dlog4j2.level=WARN org.apache.kafka.tools.consumer.ConsoleConsumer \
	  --bootstrap-server 127.0.0.1:9092 --consumer.config .elevate/kafka/credentials/$(AS).properties \
	  --group $(AS).console --topic $(TOPIC) --from-beginning --property print.key=true
