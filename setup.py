"""Package map: one distribution, several import packages (see pyproject.toml).

The library, one package per service and the umbrella CLI live in their own folders
(docs/architecture.md#layers); services import the library, never each other (tests/unit/test_imports.py).
"""

from setuptools import find_packages, setup

PACKAGE_DIRS = {
    "sipsec": "libs/sipsec",
    "sipsec_pkg": "services/pkg/sipsec_pkg",
    "sipsec_location": "services/location/sipsec_location",
    "sipsec_proxy": "services/proxy/sipsec_proxy",
    "sipsec_gateway": "services/ua-gateway/sipsec_gateway",
    "sipsec_worker": "services/crypto-worker/sipsec_worker",
    "sipsec_cli": "cli/sipsec_cli",
}

packages = []
for top, folder in PACKAGE_DIRS.items():
    packages.append(top)
    packages.extend(f"{top}.{sub}" for sub in find_packages(folder))

setup(
    packages=packages,
    package_dir=PACKAGE_DIRS,
    package_data={"": ["*.json", "*.pyi", "py.typed"]},
)
