-- docker-compose.yml: one database per service, as `make dev` on PostgreSQL makes them.
CREATE DATABASE elevate_request_api;
CREATE DATABASE elevate_approval;
CREATE DATABASE elevate_grant_worker;
CREATE DATABASE elevate_audit_ingest;
CREATE DATABASE elevate_notifier;
