"""A malformed DATABASE_URL or REDIS_URL is echoed in its error without its password (issue 30)."""

from __future__ import annotations

import pytest

from lamp_common.urls import redacted_url
from store.db import StoreError, get_engine
from worker.connection import QueueUnavailable, redis_connection

SECRET = "s3cret/pw"  # a '/' makes parsers read part of it as a port, and quote that part in their error


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://lamp:s3cretpw@db:notaport/lamp", "'postgresql+psycopg://lamp:***@db:notaport/lamp'"),
    ("nonsense lamp:s3cretpw@db", "'nonsense lamp:***@db'"),
    ("postgresql+nodriver://lamp:s3cretpw@db/lamp", "'postgresql+nodriver://lamp:***@db/lamp'"),
])
def test_a_bad_database_url_is_shown_without_its_password(url, shown):
    with pytest.raises(StoreError) as refused:
        get_engine(url)
    message = str(refused.value)
    assert message.startswith(f"DATABASE_URL: {shown} is not a database URL (")
    assert "s3cret" not in message and "pw@" not in message


@pytest.mark.parametrize(("url", "shown"), [
    (f"redis://:{SECRET}@localhost:1/0", "redis://:***@localhost:1/0"),
    ("redis//:s3cretpw@localhost:1/0", "redis//:***@localhost:1/0"),
    ("redis://:s3cretpw@localhost:1/x", "redis://:***@localhost:1/x"),
])
def test_a_bad_redis_url_is_shown_without_its_password(url, shown):
    with pytest.raises(QueueUnavailable) as refused:
        redis_connection(url)
    message = str(refused.value)
    assert message.startswith(f"REDIS_URL: cannot reach Redis at {shown} (")
    assert "s3cret" not in message


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("redis://user@host/0", "redis://user@host/0"),
    ("postgresql://u:p@ss:w@host/db", "postgresql://u:***@host/db"),
])
def test_redacted_url_hides_only_a_password(url, shown):
    assert redacted_url(url) == shown
