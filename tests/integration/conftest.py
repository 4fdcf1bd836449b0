"""Fixtures shared by the unit tests that drive the API through Flask's test client."""
import pytest

from api import create_app
from conductor import config
from conductor.appliance import Appliance


@pytest.fixture
def app_defaults() -> dict:
    """Settings every ``make_app()`` appliance starts from; a test module overrides this
    fixture to change them (e.g. short agent timeouts)."""
    return {"pxe.enabled": False}  # no boot servers on fixed ports


@pytest.fixture
def make_app(tmp_path, app_defaults):
    """``make({"section.key": value})`` -> (test client, started Appliance) over a real
    SQLite store in its own data directory; every appliance made is stopped after the test."""
    made = []

    def make(options: dict | None = None):
        settings = config.from_options({"data_dir": str(tmp_path / f"d{len(made)}"),
                                        "conductor.host": "test-conductor",
                                        **app_defaults, **(options or {})})
        appliance = Appliance(settings)
        appliance.start()
        made.append(appliance)
        return create_app(appliance.service).test_client(), appliance
    yield make
    for appliance in made:
        appliance.stop()
