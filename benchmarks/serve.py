"""A bounded load test of the online service: N requests at each concurrency, prints JSON.

Starts `birefnet serve`'s application on an embedded local Ray (or loads the service at --url),
posts one generated JPEG per request from a pool of client threads, and reports, per
concurrency: requests per second over the whole burst, latency percentiles, and errors (any
answer but 200 with a PNG of the image's size, or a failed connection). The clients run on the
same machine as the service, so on a small CPU they take some of its time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from machine import machine  # benchmarks/machine.py, beside this file
from PIL import Image

from connectors.synthetic import encode_image, object_scene


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _burst(url: str, body: bytes, size: tuple[int, int], count: int, concurrency: int) -> dict:
    local = threading.local()

    def one(_: int) -> tuple[float, bool]:
        if not hasattr(local, "session"):
            local.session = requests.Session()  # one keep-alive connection per client thread
        started = time.perf_counter()
        try:
            answer = local.session.post(f"{url}/v1/segment", data=body, timeout=300)
            ok = answer.status_code == 200 and Image.open(io.BytesIO(answer.content)).size == size
        except (requests.RequestException, OSError):
            ok = False
        return time.perf_counter() - started, ok

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(count)))
    wall = time.perf_counter() - started
    latencies = [seconds for seconds, _ in results]
    return {
        "concurrency": concurrency,
        "requests": count,
        "errors": sum(not ok for _, ok in results),
        "seconds": round(wall, 3),
        "requests_per_second": round(count / wall, 2),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
        "latency_p90_ms": round(1000 * _percentile(latencies, 90), 1),
        "latency_p99_ms": round(1000 * _percentile(latencies, 99), 1),
        "latency_max_ms": round(1000 * max(latencies), 1),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: argparse.Namespace) -> tuple[str, dict]:
    import ray

    from jobs.serve import ServeConfig, start_service

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", include_dashboard=False, logging_level="warning", log_to_driver=False)
    config = ServeConfig(
        variant=args.variant, weights=args.weights, resolution=args.resolution, device=args.device,
        port=args.port or _free_port(), max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_ms / 1000,
        replicas=args.replicas, cpus_per_replica=1, cpus_per_ingress=0.5,
    )  # fmt: skip
    url = start_service(config)
    health = requests.get(f"{url}/healthz", timeout=60).json()
    return url, {**health, "max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms,
                 "replicas": args.replicas, "resolution": args.resolution or "the variant's"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="load a running service instead of starting one")
    parser.add_argument("--variant", default="demo")
    parser.add_argument("--weights", default=None, help="default: the variant's (demo: bundled)")
    parser.add_argument("--resolution", default=None, help="working size WxH; default: the variant's")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--image", default="640x480", help="WxH of the posted JPEG")
    parser.add_argument("--warmup", type=int, default=4)
    args = parser.parse_args()

    width, height = (int(v) for v in args.image.lower().split("x"))
    body = encode_image(object_scene(width, height, 7))
    url, service = (args.url, {"url": args.url}) if args.url else _start(args)
    _burst(url, body, (width, height), args.warmup, 1)
    results = [_burst(url, body, (width, height), args.requests, int(c)) for c in args.concurrency.split(",")]
    print(json.dumps({"benchmark": "serve", "machine": machine(), "service": service, "image": args.image,
                      "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
