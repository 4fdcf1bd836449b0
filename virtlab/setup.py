"""metalcast-lab: the virtual lab (simulated BMCs and machines) of ``metalcast demo``.

Its own distribution so that the product wheel does not ship it: the ``lab`` extra of
metalcast installs it (``pip install 'metalcast[lab]'``; from a source checkout
``pip install -e ./virtlab -e '.[lab]'``). Built from this folder, which is the
``virtlab`` package itself.
"""
from setuptools import setup

setup(
    name="metalcast-lab",
    version="0.1.0",
    description="Virtual lab for metalcast: IPMI/Redfish BMCs and PXE-booting machines",
    python_requires=">=3.11",
    packages=["virtlab", "virtlab.demo"],
    package_dir={"virtlab": "."},
    package_data={"virtlab": ["*.sh"]},
    install_requires=[
        # The appliance it demonstrates, the client it drives, and the libraries both
        # share (bcrypt, pyghmi, tftpy, werkzeug: declared, with their ranges, there).
        "metalcast==0.1.0",
        "sushy-tools>=2.2,<2.3",    # Redfish emulator (virtlab.redfish patches its fake driver)
    ],
)
