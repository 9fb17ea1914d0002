"""Search spaces: the schedule knobs of a layer as small frozen records (the default choice comes first)."""
from __future__ import annotations

from ..ir import Node
from ..ir.interpreter import node_out_spatial
from ..targets.arm_neon.conv3d import ConvTile, default_tile, workload_key

__all__ = ["workload_key", "tunable", "conv_space"]


def tunable(node: Node) -> bool:
    return node.op == "conv3d" and node.attrs.groups == 1 and node.inputs[1].data is not None


def conv_space(node: Node, lanes: int, max_acc: int = 28) -> list[ConvTile]:
    """Register tiles that divide the output plane and fit the register file; the heuristic default first."""
    sp = node_out_spatial(node, node.attrs.out_block)
    oh, ow = (sp[-2] if len(sp) >= 2 else 1), sp[-1]
    default = default_tile(node, oh, ow, lanes)
    tiles = [default]
    for tm in (1, 2, 3, 4):
        for th in (1, 2, 4):
            for tw in range(1, min(ow, 14) + 1):
                t = ConvTile(th, tw, tm)
                if oh % th == 0 and ow % tw == 0 and 8 <= th * tw * tm <= max_acc and t != default:
                    tiles.append(t)
    # most promising first: close to the default's accumulator count
    acc = default.th * default.tw * default.tm
    return tiles[:1] + sorted(tiles[1:], key=lambda t: (abs(t.th * t.tw * t.tm - acc), t.th, -t.tw))
