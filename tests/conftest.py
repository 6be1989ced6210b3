"""Shared fixtures live in tests/fixtures/, one module per subsystem."""

pytest_plugins = [
    "tests.fixtures.audio",
    "tests.fixtures.model",
    "tests.fixtures.triton",
    "tests.fixtures.gateway",
    "tests.fixtures.realtime",
    "tests.fixtures.words",
]
