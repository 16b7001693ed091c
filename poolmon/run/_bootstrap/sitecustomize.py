"""poolmon's start-up hook for ``poolmon run`` (imported by Python's ``site`` module at start-up).

It must never break the program: a failure is reported once on stderr and the program runs
uninstrumented. A ``sitecustomize`` found later on ``sys.path`` (a distribution's or a virtualenv's)
still runs, afterwards, as it would have without poolmon.
"""

import os
import sys


def _poolmon_boot() -> None:
    if not os.environ.get("POOLMON_RUN"):
        return
    try:
        from poolmon.run.boot import start
    except Exception as exc:  # this interpreter cannot import poolmon (another Python)
        sys.stderr.write(f"poolmon run: inactive in {sys.executable} ({type(exc).__name__})\n")
        return
    start()


def _chain_next_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # site.py reports a failing sitecustomize the same way
        sys.stderr.write(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{exc!r}\n")


_poolmon_boot()
_chain_next_sitecustomize()
