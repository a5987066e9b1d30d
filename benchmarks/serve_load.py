"""Load on `ferlab serve`: throughput, latency, memory, and /healthz answering throughout.

Run by hand from the project root on an otherwise idle machine (never in CI):
    python benchmarks/serve_load.py [--model models/model.h5] [--requests 2000] [--concurrency 16 64]
        [--api-key] [--server-args "--detector haar"] [--out reports/benchmarks/serve_load.json]
Needs aiohttp (installed with mlflow) and psutil (the bench extra).

Starts `ferlab serve` as its own process on a free loopback port, then sends a 640x480
JPEG with one face (scikit-image's astronaut) from a separate client process (asyncio +
aiohttp, keep-alive connections): 200 requests at concurrency 1 and 4, then --requests
at each --concurrency. With --api-key the server has an API key (and a per-client rate limit
too high to refuse anything, so that its bookkeeping is in the figures) and the client sends it.
Meanwhile this process polls /healthz every 100 ms and samples the server's memory, and measures
the CPU that other processes took (on a shared machine the
figures only mean something when that is near 0). Prints a table and writes
reports/benchmarks/serve_load.json.
"""

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

OUT = Path("reports/benchmarks/serve_load.json")


# ---- the client process ---------------------------------------------------------------------


async def load(url: str, image: bytes, requests: int, concurrency: int, key: str | None = None) -> dict:
    import aiohttp

    latencies, statuses = [], {}
    headers = {"Content-Type": "image/jpeg"} | ({"Authorization": f"Bearer {key}"} if key else {})
    remaining = requests

    async def worker(session):
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                async with session.post(url, data=image, headers=headers) as response:
                    body = await response.json()
                    ok = response.status == 200 and len(body["faces"]) == 1
                    key = "ok" if ok else str(response.status)
            except Exception as err:  # noqa: BLE001 - a benchmark counts every kind of failure
                key = type(err).__name__
            latencies.append(time.perf_counter() - started)
            statuses[key] = statuses.get(key, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": requests - statuses.get("ok", 0),
        "statuses": statuses,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(requests / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 1),
        "p90_ms": round(ms[int(0.90 * (len(ms) - 1))], 1),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
        "max_ms": round(ms[-1], 1),
    }


def client_main(args) -> None:
    image = Path(args.image).read_bytes()
    result = asyncio.run(load(args.url, image, args.requests, args.concurrency[0], os.environ.get("SERVE_LOAD_KEY")))
    print(json.dumps(result))


# ---- the benchmark --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_image(path: Path) -> bytes:
    import cv2
    from skimage import data

    face = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (480, 480), interpolation=cv2.INTER_AREA)
    frame = cv2.copyMakeBorder(face, 0, 0, 80, 80, cv2.BORDER_CONSTANT, value=(40, 40, 40))
    jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    path.write_bytes(jpeg)
    return jpeg


def get(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


class Watcher(threading.Thread):
    """Polls /healthz and samples the server's resident memory while a run goes on."""

    def __init__(self, base: str, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.base, self.pid, self.every = base, pid, every
        self.health_ms: list[float] = []
        self.health_failures = 0
        self.rss_mb: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        process = psutil.Process(self.pid)
        while not self.done.is_set():
            started = time.perf_counter()
            if get(self.base + "healthz") == 200:
                self.health_ms.append((time.perf_counter() - started) * 1000)
            else:
                self.health_failures += 1
            self.rss_mb.append(process.memory_info().rss / 2**20)
            self.done.wait(self.every)


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def busy_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine (every process, ours or not) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def our_cpu_seconds(pid: int) -> float:
    """CPU seconds of the server, of finished client processes and of this process."""
    import resource

    import psutil

    server = psutil.Process(pid).cpu_times()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return server.user + server.system + children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime


def run_phase(base: str, pid: int, image_path: Path, requests: int, concurrency: int, key: str | None) -> dict:
    watcher = Watcher(base, pid)
    busy, ours, started = busy_cpu_seconds(), our_cpu_seconds(pid), time.perf_counter()
    watcher.start()
    client = subprocess.run(
        [
            sys.executable,
            __file__,
            "--client",
            "--url",
            base + "v1/predict",
            "--image",
            str(image_path),
            "--requests",
            str(requests),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | ({"SERVE_LOAD_KEY": key} if key else {}),
    )
    watcher.done.set()
    watcher.join()
    elapsed = time.perf_counter() - started
    others = (busy_cpu_seconds() - busy) - (our_cpu_seconds(pid) - ours)
    result = json.loads(client.stdout.strip().splitlines()[-1])
    result["other_processes_cpus"] = round(max(0.0, others) / elapsed, 2)  # cores busy with work not ours
    result["healthz"] = {
        "polls": len(watcher.health_ms) + watcher.health_failures,
        "failures": watcher.health_failures,
        "median_ms": round(statistics.median(watcher.health_ms), 1) if watcher.health_ms else None,
        "max_ms": round(max(watcher.health_ms), 1) if watcher.health_ms else None,
    }
    result["server_rss_mb_max_sampled"] = round(max(watcher.rss_mb), 1) if watcher.rss_mb else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/model.h5")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16])
    parser.add_argument("--api-key", action="store_true", help="serve with an API key and send it")
    parser.add_argument("--small-requests", type=int, default=200, help="requests at concurrency 1 and 4")
    parser.add_argument("--server-args", default="", help="more `ferlab serve` options, e.g. '--max-concurrency 2'")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args)

    work = Path(tempfile.mkdtemp(prefix="ferlab-serve-load-"))
    image_path = work / "astronaut_640x480.jpg"
    image = test_image(image_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    log = work / "serve.log"
    command = [sys.executable, "-m", "ferlab.cli", "serve", "--model", args.model, "--port", str(port)]
    key = None
    if args.api_key:
        import secrets

        key = secrets.token_hex(24)
        (work / "keys.txt").write_text(f"bench:{key}\n")
        command += ["--api-key-file", str(work / "keys.txt"), "--rate-limit", "1000000/minute"]
    command += args.server_args.split()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        while get(base + "readyz") != 200:
            if server.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit(f"the server did not get ready; see {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        ready_s = time.perf_counter() - started
        idle_rss = peak_rss_mb(server.pid)
        run_phase(base, server.pid, image_path, 20, 4, key)  # warm-up, not reported
        runs = [run_phase(base, server.pid, image_path, args.small_requests, c, key) for c in (1, 4)]
        runs += [run_phase(base, server.pid, image_path, args.requests, c, key) for c in args.concurrency]
        peak = peak_rss_mb(server.pid)
        asked = urllib.request.Request(base + "v1/model", headers={"Authorization": f"Bearer {key}"} if key else {})
        info = json.loads(urllib.request.urlopen(asked).read())
    finally:
        server.terminate()
        server.wait(60)

    result = {
        "what": "ferlab serve under load: POST /v1/predict of one 640x480 JPEG (one face), keep-alive connections",
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
        },
        "server": {
            "command": " ".join(command[1:]).replace(f"--port {port}", "--port <free>").replace(str(work), "<tmp>"),
            "api_key": bool(key),
            "model": info,
            "ready_after_s": round(ready_s, 1),
            "rss_mb_when_ready": idle_rss,
            "peak_rss_mb": peak,
        },
        "image_bytes": len(image),
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"ferlab serve, {args.model} ({info.get('runtime')} runtime, {info.get('detector')} detector), "
        f"{os.cpu_count()} CPUs; ready in {ready_s:.1f} s; "
        f"server memory {idle_rss} MB when ready, peak {peak} MB"
    )
    print(
        f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'healthz max ms':>14} {'healthz fails':>13} {'other CPU':>9}"
    )
    for r in runs:
        print(
            f"{r['concurrency']:>11} {r['requests']:>8} {r['errors']:>6} {r['throughput_rps']:>7} {r['p50_ms']:>7} "
            f"{r['p99_ms']:>7} {r['healthz']['max_ms']!s:>14} {r['healthz']['failures']:>13} "
            f"{r['other_processes_cpus']:>9}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
