"""All-reduce baseline: torch.distributed with the gloo backend, N local processes.

usage: gloo_allreduce.py [--nodes N] [--floats F] [--iters K] [--warmup W]
                         [--host ADDR] [--ifname IFACE] [--threads T]

Spawns N processes that join one gloo process group through a TCP store on ADDR (default
127.0.0.1), all-reduce (sum) a float32 tensor of F floats W times untimed, then K times timed,
then K times back to back, check the result, and print ONE JSON line on stdout:

  {"backend":"gloo","nodes":N,"floats":F,"bytes":4F,"iters":K,"seconds_mean":..,
   "seconds_p50":..,"algbw_gbps":..,"busbw_gbps":..,"seconds_period":..,"busbw_period_gbps":..}

Timing. Every timed iteration starts after a barrier; each rank times its own all_reduce call
with time.perf_counter, and the iteration's time is the slowest rank's (an all-reduce is done
when the last rank has the result). seconds_mean and seconds_p50 are the mean and median of
those K per-iteration times. seconds_period is the slowest rank's wall time for K
all-reduces back to back (each after refilling the buffer, no barrier) divided by K: the rate a
training loop sees, which `gradmesh bench allreduce` compares with its own round period.

Bandwidth, following the nccl-tests convention (doc/PERFORMANCE.md there):
  algbw = bytes / seconds_mean                 (decimal GB/s, 1e9 bytes)
  busbw = algbw * 2 * (N - 1) / N
busbw is the per-link traffic of a bandwidth-optimal all-reduce (a reduce-scatter plus an
all-gather each move (N-1)/N of the buffer through every rank), so it is comparable across N.

The store is hosted by this parent process on a port the OS picks (port 0), so there is no
free-port race. gloo binds its own sockets to the interface named by --ifname (it sets
GLOO_SOCKET_IFNAME in the workers); without --ifname, the interface holding --host is looked up
with `ip -o addr` (`lo` for 127.0.0.1), so the script also runs inside a network namespace with
--host set to that namespace's address.

Exit status is non-zero, with a message on stderr, if a worker fails or the reduced tensor is
wrong: the figures are only printed for a correct all-reduce.
"""

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TIMEOUT = timedelta(seconds=120)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=4, help="processes in the group (default 4)")
    p.add_argument("--floats", type=int, default=16 * 1024 * 1024, help="float32 elements (default 16Mi = 64 MiB)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
    p.add_argument("--host", default="127.0.0.1", help="address of the TCP store and of gloo's sockets")
    p.add_argument("--ifname", default=None, help="network interface for gloo (default: the one holding --host)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process (default 1)")
    args = p.parse_args(argv)
    if args.nodes < 2 or args.floats < 1 or args.iters < 1 or args.warmup < 0 or args.threads < 1:
        p.error("need --nodes >= 2, --floats >= 1, --iters >= 1, --warmup >= 0, --threads >= 1")
    return args


def interface_of(host: str) -> str:
    """The network interface that holds `host` (IPv4 or IPv6), from `ip -o addr show`."""
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        return "lo"
    lines = subprocess.run(["ip", "-o", "addr", "show"], check=True, capture_output=True, text=True).stdout
    for line in lines.splitlines():
        fields = line.split()
        # "<index>: <ifname> inet|inet6 <addr>/<prefix> ..."
        if len(fields) >= 4 and fields[2] in ("inet", "inet6"):
            if ipaddress.ip_address(fields[3].split("/")[0]) == address:
                return fields[1].split("@")[0]
    raise SystemExit(f"gloo_allreduce: no interface holds {host}; pass --ifname")


def worker(rank: int, args: argparse.Namespace, port: int, ifname: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = ifname
    torch.set_num_threads(args.threads)
    store = dist.TCPStore(args.host, port, world_size=args.nodes, is_master=False, timeout=TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=args.nodes, timeout=TIMEOUT)
    tensor = torch.empty(args.floats, dtype=torch.float32)
    # Rank r contributes r + 1 everywhere, so every element of the sum is N (N + 1) / 2 exactly.
    for _ in range(args.warmup):
        tensor.fill_(rank + 1)
        dist.all_reduce(tensor)
    seconds = torch.empty(args.iters, dtype=torch.float64)
    for i in range(args.iters):
        tensor.fill_(rank + 1)
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(tensor)
        seconds[i] = time.perf_counter() - start
    # The period a training loop sees: K all-reduces back to back (each after refilling the
    # buffer, as a loop writes its next gradient), no barrier between them.
    dist.barrier()
    start = time.perf_counter()
    for _ in range(args.iters):
        tensor.fill_(rank + 1)
        dist.all_reduce(tensor)
    period = torch.tensor([(time.perf_counter() - start) / args.iters], dtype=torch.float64)
    dist.all_reduce(period, op=dist.ReduceOp.MAX)
    expected = args.nodes * (args.nodes + 1) / 2
    wrong = torch.tensor([int((tensor != expected).sum())], dtype=torch.int64)
    dist.all_reduce(wrong)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    if rank == 0:
        if int(wrong) != 0:
            raise SystemExit(f"gloo_allreduce: {int(wrong)} reduced elements differ from {expected}")
        report(args, seconds.tolist(), float(period))
    dist.destroy_process_group()


def report(args: argparse.Namespace, seconds: list[float], period: float) -> None:
    nbytes = 4 * args.floats
    mean = statistics.fmean(seconds)
    algbw = nbytes / mean / 1e9
    line = {
        "backend": "gloo",
        "nodes": args.nodes,
        "floats": args.floats,
        "bytes": nbytes,
        "iters": args.iters,
        "seconds_mean": mean,
        "seconds_p50": statistics.median(seconds),
        "algbw_gbps": algbw,
        "busbw_gbps": algbw * 2 * (args.nodes - 1) / args.nodes,
        "seconds_period": period,
        "busbw_period_gbps": nbytes / period / 1e9 * 2 * (args.nodes - 1) / args.nodes,
    }
    print(json.dumps(line, separators=(",", ":")), flush=True)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    ifname = args.ifname or interface_of(args.host)
    # The parent hosts the store on an OS-chosen port and keeps it alive while the workers run.
    store = dist.TCPStore(args.host, 0, world_size=None, is_master=True, wait_for_workers=False, timeout=TIMEOUT)
    mp.spawn(worker, args=(args, store.port, ifname), nprocs=args.nodes, join=True)


if __name__ == "__main__":
    main(sys.argv[1:])
