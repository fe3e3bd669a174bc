"""Identity Store and Organizations, cached."""
