"""The portal: server-rendered pages for on-call engineers, served by request-api and
calling the same use cases as `/v1` (docs/portal.md)."""
