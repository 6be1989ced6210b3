"""Shared fixtures live in tests/fixtures/, one module per subsystem."""

pytest_plugins = [
    "tests.fixtures.audio",
    "tests.fixtures.model",
    "tests.fixtures.triton",
    "tests.fixtures.gateway",
    "tests.fixtures.words",  # before realtime, which imports it
    "tests.fixtures.realtime",
]
