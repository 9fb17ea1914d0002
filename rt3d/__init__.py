"""rt3d: real-time 3D CNNs on small devices.

    import rt3d
    mod = rt3d.build("c3d.onnx", target="host")
    y = mod.run(clip)
"""
import os as _os

# TVM's thread pool reads this once, when it starts: use every core unless the user chose otherwise.
_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity")
                                              else (_os.cpu_count() or 1)))

__version__ = "0.1.0"

from . import passes, targets  # noqa: E402,F401  (rt3d.passes, rt3d.targets for users)
from .api import autotune, build  # noqa: E402
from .errors import (BuildError, ConversionError, InputError, IRError, ModelLoadError, PassError,  # noqa: E402
                     Rt3dError, UnsupportedOpsError)
from .frontend.onnx import import_model as import_onnx  # noqa: E402
from .ir import Graph, parse_graph  # noqa: E402
from .passes import Pass, register_pass  # noqa: E402
from .runtime import Module, load  # noqa: E402


def prune(model, train, val, scheme: str = "kgs", group=(8, 4), algorithm: str = "reweighted",
          flops_target: float = 3.6, **options):
    """Learn structured sparsity on a torch model; see ``rt3d.frontend.pruning.prune`` (imports torch lazily).

    Example: ``pruned, report = rt3d.prune(model, train, val, scheme="kgs", flops_target=3.6)``.
    """
    from .frontend.pruning import prune as _prune
    return _prune(model, train, val, scheme=scheme, group=group, algorithm=algorithm, flops_target=flops_target,
                  **options)


__all__ = ["build", "autotune", "prune", "load", "import_onnx", "Module", "Graph", "parse_graph", "Pass", "register_pass", "passes",
           "Rt3dError", "ModelLoadError", "UnsupportedOpsError", "ConversionError", "IRError", "PassError",
           "BuildError", "InputError"]
