"""Distributed data-parallel training with its lr schedule kept by lrkeeper.

Run it against a service (``lrkeeper serve``) with either launcher:

    python tests/client/example_ddp.py --world-size 2
    torchrun --nproc-per-node 2 tests/client/example_ddp.py

Every rank constructs ``RemoteLRScheduler`` for the same run and calls ``step()``
with the validation loss averaged over all ranks, so every rank sends the same
metric and gets the same lr. The run is ranked (the scheduler reads the rank from
torch.distributed), so each step is decided once every rank has reported: the mean of
the ranks' equal metrics is that metric. With ``--rank0-reports`` only rank 0 reports
(``ranks=False``: a ranked run would wait for the others); the others take the value
it recorded with ``sync(step)``. Kill it and run it again with the same
``--run-id``: it continues where the run is.

``--out DIR`` writes what each rank held after each step to ``DIR/rank<r>.json``
(tests/client/test_ddp_example.py checks them).
"""

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# Run as a script, the project root is not on sys.path (the client is, once installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from client import RemoteLRScheduler

SCHEDULE: dict[str, Any] = {
    "type": "ReduceLROnPlateau",
    "params": {"factor": 0.5, "patience": 1, "threshold": 0.1},
}


def train(rank: int, world_size: int, arguments: argparse.Namespace) -> None:
    dist.init_process_group(
        "gloo", init_method=arguments.init_method, rank=rank, world_size=world_size
    )
    torch.manual_seed(0)  # the same initial weights on every rank
    model = DistributedDataParallel(nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # Was: scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, ...)
    # With rank 0 alone reporting, the run must not wait for every rank's metric.
    ranked = False if arguments.rank0_reports else None
    scheduler = RemoteLRScheduler(
        optimizer, arguments.run_id, SCHEDULE, url=arguments.url, ranks=ranked
    )

    generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard
    true_weights = torch.linspace(-1, 1, 16)
    held = []
    while scheduler.last_epoch < arguments.epochs:
        for _ in range(4):
            inputs = torch.randn(32, 16, generator=generator)
            targets = inputs @ true_weights + 0.1 * torch.randn(32, generator=generator)
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(inputs).squeeze(1), targets)
            loss.backward()  # DDP averages the gradients: also a barrier between ranks
            optimizer.step()

        with torch.no_grad():
            inputs = torch.randn(64, 16, generator=generator)
            val_loss = nn.functional.mse_loss(model(inputs).squeeze(1), inputs @ true_weights)
        dist.all_reduce(val_loss)  # the same metric on every rank ...
        val_loss /= world_size

        if not arguments.rank0_reports:
            scheduler.step(val_loss)  # ... so every rank gets the same answer
        else:
            if rank == 0:
                scheduler.step(val_loss)
            dist.barrier()  # rank 0 has handed its step over; sync() waits until it is recorded
            if rank != 0:
                scheduler.sync(step=scheduler.last_epoch + 1)
        held.append(
            {
                "step": scheduler.last_epoch,
                "val_loss": float(val_loss),
                "lr": scheduler.get_last_lr(),
                "momentum": [group["momentum"] for group in optimizer.param_groups],
            }
        )

    if rank == 0:
        scheduler.finish()
    scheduler.close()
    if arguments.out is not None:
        (Path(arguments.out) / f"rank{rank}.json").write_text(json.dumps(held))
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("LRKEEPER_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--run-id", default="ddp-example")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--rank0-reports", action="store_true")
    parser.add_argument("--out", default=None)
    arguments = parser.parse_args()

    if "RANK" in os.environ:  # started by torchrun: this process is one rank
        arguments.init_method = "env://"
        train(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), arguments)
        return
    arguments.init_method = f"tcp://127.0.0.1:{free_port()}"
    torch.multiprocessing.spawn(
        train, args=(arguments.world_size, arguments), nprocs=arguments.world_size
    )


if __name__ == "__main__":
    main()
