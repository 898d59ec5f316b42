"""The fake npm registry is shared by the sample and the serve/demo tests."""

from tests.cli.test_samples import registry  # noqa: F401 - a fixture
