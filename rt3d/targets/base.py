"""A Target: a name, a TVM target, its capabilities and a lowering table (IR op -> TE builder + schedule)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..ir import Node, Value


@dataclass
class Kernel:
    """One IR node lowered: a scheduled PrimFunc and where its arguments come from.

    ``args`` lists, in the PrimFunc's parameter order (output last, not listed), either an IR Value (computed at
    run time) or a numpy array prepared at build time (packed weights, bias, averaging counts...).
    """

    func: object  # tvm.tirx.PrimFunc
    args: list[Value | np.ndarray]
    impl: str  # which kernel implementation ran, e.g. "conv3d.direct_blocked(vl=16, tile=2x8)"


Lowering = Callable[[Node, "Target"], Kernel]


def link_compiler(link: dict) -> str | None:
    """See Target.linker (also used on an artifact's meta["link"])."""
    return (os.environ.get(link["cc_env"]) if link.get("cc_env") else None) or link.get("cc")


@dataclass
class Target:
    """A compilation target. ``lowerings`` maps IR op names to functions building a scheduled Kernel."""

    name: str
    tvm_target: dict
    vector_lanes: int  # fp32 lanes of one SIMD register
    num_cores: int
    runs_here: bool
    lowerings: dict[str, Lowering] = field(default_factory=dict)
    doc: str = ""
    tuned: dict = field(default_factory=dict)  # workload key -> schedule record, from a tuning database
    # how Module.export links the library: {"kind": "native"} (this machine), or {"kind": "cross", "cc": compiler}
    # / {"cc_env": variable naming it, "howto": what to do when it is unset}
    link: dict = field(default_factory=lambda: {"kind": "native"})
    emulate: str = ""  # "qemu-aarch64": Module.run runs the exported artifact under emulation here;
    #                    "pyopencl": runs its OpenCL kernels through pyopencl (PoCL here)
    gpu_threads: int = 0  # GPU targets: threads per work-group of the default schedule (0: a CPU target)
    precision: str = "float32"  # "float16": the pipeline stores every tensor as float16 (to-fp16)
    l2_bytes: int = 0  # CPU targets: one core's L2 cache, which kernels size their cache blocking by (0: unknown)
    l1_bytes: int = 0  # and its L1 data cache (0: unknown)
    # CPU targets: architectural SIMD registers, which bound the kernels' register tiles (AArch64 and AVX-512: 32;
    # AVX2: 16, where tiles made for 32 spilled their accumulators and the dense convs ran at a third of the speed)
    vector_registers: int = 32

    def linker(self) -> str | None:
        """The compiler that links this target's libraries: the environment variable the link names (an NDK), else
        its fixed compiler; None for this machine's own, or when a named variable is unset."""
        return link_compiler(self.link)

    def key(self) -> str:
        """Identifies the machine kind tuning records apply to (target, CPU, cores, vector width)."""
        t = self.tvm_target
        return f"{self.name}:{t.get('mcpu', t.get('mtriple', ''))}:{t.get('num-cores', '')}:{self.vector_lanes}"

    def default_passes(self, always_sparse: bool = False) -> str:
        """The pipeline rt3d.build runs for this target unless told otherwise. ``always_sparse`` turns off the
        density and cost cut-offs of eliminate-kgs-columns, so that every annotated layer gets the sparse kernel
        (for measuring it on small layers: tests, ``rt3d tune-groups``)."""
        eliminate = ("eliminate-kgs-columns{max_density=1.0,cost_model=false}" if always_sparse
                     else "eliminate-kgs-columns" + (f"{{lanes={self.vector_lanes}}}" if not self.gpu_threads else ""))
        sparse = (f"detect-sparsity,{eliminate},reorder-kernel-groups{{threads={self.num_cores}}},"
                  if "sparse_conv3d" in self.lowerings else "")
        # GPUs: plain NCDHW, and their conv kernel has no fused pool
        block = f"block-layout{{block={self.vector_lanes}}},fuse-pool," if not self.gpu_threads else ""
        if "sparse_sep_conv3d" in self.lowerings:
            block += f"fuse-sep-convs{{lanes={self.vector_lanes},l2={self.l2_bytes}}},"
        fp16 = "to-fp16," if self.precision == "float16" else ""
        return f"fold-constants,fold-bn,fuse,{sparse}{block}{fp16}dce"

    def tvm(self):
        import tvm
        return tvm.target.Target(self.tvm_target)

    def lower(self, node: Node) -> Kernel:
        if node.op not in self.lowerings:
            from ..errors import BuildError
            raise BuildError(f"target '{self.name}' cannot lower op '{node.op}' (node: {node}); it lowers: "
                             f"{', '.join(sorted(self.lowerings))}")
        return self.lowerings[node.op](node, self)
