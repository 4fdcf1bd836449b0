"""metalcast: bare-metal provisioning and image-update appliance.

The product wheel holds the appliance (api, conductor, pxe_templates), the agent
(ramdisk_agent) and the client (cli). The virtual lab that ``metalcast demo`` and the
functional tests drive is its own distribution, ``metalcast-lab`` (virtlab/setup.py),
installed by the ``lab`` extra: ``pip install 'metalcast[lab]'``, or in a source
checkout ``pip install -e ./virtlab -e '.[lab]'`` (what scripts/demo runs).
"""
from setuptools import find_packages, setup

VERSION = "0.1.0"  # virtlab/setup.py requires this exact version of metalcast

#: PostgreSQL, for several conductors sharing one database (SQLite needs nothing).
POSTGRESQL = ["psycopg[binary]>=3.1,<4"]
#: The virtual lab: simulated BMCs and machines for `metalcast demo` and the tests.
LAB = [f"metalcast-lab=={VERSION}"]

setup(
    name="metalcast",
    version=VERSION,
    description="Bare-metal provisioning appliance with an Ironic-compatible API",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["api", "api.*", "conductor", "conductor.*",
                                    "ramdisk_agent", "ramdisk_agent.*", "pxe_templates",
                                    "cli", "cli.*"]),
    package_data={"conductor.db": ["migrations/*.py", "migrations/*.mako",
                                   "migrations/versions/*.py"],
                  "pxe_templates": ["*.j2", "*/*.j2"],
                  "api.console": ["templates/console/*.html", "static/*"]},
    install_requires=[
        "flask>=3.0,<4",            # REST API (app factory + blueprints)
        "werkzeug>=3.0,<4",         # HTTP exceptions the API raises and renders (Flask's own)
        "waitress>=3.0,<4",         # production WSGI server, pure Python, threaded
        "sqlalchemy>=2.0,<2.2",     # persistence (Core), SQLite and PostgreSQL
        "alembic>=1.13,<2",         # schema migrations
        "jsonpatch>=1.33,<2",       # RFC 6902 PATCH, as Ironic
        "jsonpointer>=2.0,<4",      # its pointer errors, refused as 400s (validation.py)
        "bcrypt>=4.0,<6",           # htpasswd verification for http_basic auth
        "requests>=2.31,<3",        # CLI client
        "pyyaml>=6.0,<7",           # enrolment files
        "jinja2>=3.1,<4",           # boot config templates
        "orjson>=3.9,<4",           # response JSON: ~8x faster than json on big node lists
        "cryptography>=42,<51",     # Fernet: BMC passwords in driver_info encrypted at rest
        "sushy>=5.10.1,<6",         # Redfish client of the redfish driver (5.10.1: working connect_timeout)
        "pyghmi>=1.6,<1.7",         # IPMI: ipmi driver client, virtlab.bmc server (1.6 quirks handled)
        "dnspython>=2.6,<3",        # DNS registration: RFC 2136 UPDATE with TSIG (drivers/dns.py)
        "tftpy>=0.8,<0.9",          # TFTP request/OACK packets (hot transfer loop is ours: netboot/tftp.py)
        "zstandard>=0.20,<1",       # agent: zstd-compressed qcow2 clusters (ramdisk/qcow2.py)
        "prometheus_client>=0.17,<1",  # /metrics: Prometheus' text format, typed families, per-appliance registry
        "defusedxml>=0.7,<0.8",     # Omaha XML from anonymous update clients: no DTDs, entities, external refs (wire/omaha_xml.py)
    ],
    extras_require={
        "postgresql": POSTGRESQL,
        "lab": LAB,
        "test": POSTGRESQL + LAB + [     # tests run both database backends and drive the lab
            "pytest>=8,<10",
            "pytest-timeout>=2.3,<3",        # per-test timeout (pytest.ini), thread method
            "openstacksdk>=4.0,<5",          # real Ironic client under test
            "python-ironicclient>=5.0,<7",   # the `baremetal` CLI under test
            "ruff>=0.17.6,<0.18", "mypy>=2.4.1,<2.5", "import-linter>=2.17,<3",  # scripts/lint
            "types-PyYAML", "types-requests", "types-defusedxml",  # stubs for mypy (scripts/lint)
            "selenium>=4.20,<5",             # drives headless Chromium in the console's browser tests
        ],
    },
    entry_points={"console_scripts": [
        "metalcast = cli.main:main",
        "metalcast-agent = ramdisk_agent.cli:main",
        "sw-patch-build = conductor.cmd.patch_build:main",
        "sw-patch = cli.sw_patch:main",
        "sw-manager = cli.sw_manager:main",
    ]},
)
