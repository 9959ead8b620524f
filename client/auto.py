"""Importing this module accelerates the program (install()): `import freeflow.client.auto` first thing,
or from sitecustomize. FREEFLOW_DISABLE=1 still turns it off.
"""

from freeflow.client import install

install()
