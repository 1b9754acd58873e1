"""One place says which store class serves which URL scheme: ``stores.SCHEMES``."""

from __future__ import annotations

import importlib

import pytest

from ciba_middleware.errors import ConfigurationError
from ciba_middleware.stores import SCHEMES, schemes_of
from ciba_middleware.stores.memory import MemoryTicketStore
from ciba_middleware.stores.postgresql import PostgreSQLTicketStore
from ciba_middleware.stores.sqlite import SQLiteTicketStore


def test_every_scheme_names_a_class_that_serves_it() -> None:
    for scheme, target in SCHEMES.items():
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        assert scheme in schemes_of(cls)
    assert schemes_of(PostgreSQLTicketStore) == ("postgresql", "postgres")
    assert schemes_of(SQLiteTicketStore) == ("sqlite",)


@pytest.mark.parametrize(
    ("cls", "url", "message"),
    [
        (MemoryTicketStore, "sqlite:///t.db", "not a memory URL: sqlite://"),
        (SQLiteTicketStore, "memory://", "not an sqlite URL: memory://"),
        (PostgreSQLTicketStore, "redis://127.0.0.1/0", "not a PostgreSQL URL: redis://"),
    ],
)
def test_a_store_refuses_a_scheme_that_is_not_its_own(cls: type, url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        cls.from_url(url)  # type: ignore[attr-defined]
    assert str(raised.value) == message


def test_a_subclass_serves_the_schemes_of_its_base() -> None:
    class Tuned(SQLiteTicketStore):
        pass

    assert schemes_of(Tuned) == ("sqlite",)
    assert isinstance(Tuned.from_url("sqlite:///:memory:"), Tuned)
