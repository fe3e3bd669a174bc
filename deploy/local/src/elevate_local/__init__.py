"""The local stack Elevate runs on a laptop and in tests: real Kafka, PostgreSQL, moto, OIDC."""
