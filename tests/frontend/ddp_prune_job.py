"""A short pruning job for the DDP test: run under torchrun; every rank saves its final weights and masks."""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist

import rt3d
from rt3d.data.motion import MotionDataset
from rt3d.frontend.pruning import masks_of
from rt3d.models import get_model


def main(out: str, algorithm: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    model, shape = get_model("c3d_small", randomize_bn=False)
    train = MotionDataset(48, "train", seed=3, size=shape[-1], frames=shape[2])
    val = MotionDataset(20, "val", seed=3, size=shape[-1], frames=shape[2])
    pruned, report = rt3d.prune(model, train, val, scheme="kgs", group=(4, 4), algorithm=algorithm,
                                flops_target=1.6, epochs=(1, 1), batch_size=8, rounds=2, min_channels=4,
                                progress=False)
    state = {k: v.detach().clone() for k, v in pruned.state_dict().items()}
    masks = {k: torch.from_numpy(m) for k, m in masks_of(pruned).items()}
    torch.save({"state": state, "masks": masks, "accuracy": report.accuracy, "macs": report.macs,
                "world": dist.get_world_size()}, f"{out}/rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
