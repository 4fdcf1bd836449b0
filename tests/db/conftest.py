"""DB tier: the real Store over a fresh database on each backend (see ``db_url``)."""
from __future__ import annotations

import pytest

from conductor.db.engine import make_engine
from conductor.db.queries import Store


@pytest.fixture
def store(db_url):
    engine = make_engine(db_url)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def make_node(store):
    """Create a node with sensible defaults; keyword arguments are column values."""
    def make(**values):
        values.setdefault("driver", "fake-hardware")
        return store.create_node(values)
    return make


@pytest.fixture
def engines(db_url):
    """Engines on the same database, each its own pool: one per conductor."""
    made = []

    def make():
        made.append(make_engine(db_url))
        return made[-1]
    yield make
    for engine in made:
        engine.dispose()
