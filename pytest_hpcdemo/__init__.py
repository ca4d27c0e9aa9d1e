"""pytest-hpcdemo: a pytest plugin and benchmark suite that measures the claims of a Python HPC guide.

Empty on purpose: the plugin (``pytest_hpcdemo.plugin``) loads in every pytest session of an
environment that has it installed, and this package's import is part of that cost. Being a regular
package (not a namespace one) also keeps pytest's assertion rewriting to ``pytest_hpcdemo``: without
this file pytest marks our module names (``plugin``, ``session``, ``__main__``, ...) for rewriting
as top-level modules of every project, and warns about ``__main__`` in every session.
"""
