"""Integrations with the frameworks applications are built on.

Each subpackage imports its framework; the SDK below never does, so ``pip install
celeriac`` stays light and a framework is needed only where it is used.
"""
