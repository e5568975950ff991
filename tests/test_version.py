"""``childvault.__version__`` comes from the package metadata."""

from importlib.metadata import version

import childvault


def test_version_is_the_installed_distributions() -> None:
    assert childvault.__version__ == version("childvault")
