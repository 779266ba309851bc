"""Serving cost: requests per second for /atom.xml, `aggregator serve` against nginx.

Feed readers poll; most polls should be cheap 304s. One realistic atom.xml (200 items from
a real store, Hindi and English) is published once, then served from the same directory by
`aggregator serve` and by nginx (one worker, access log off, etag on), both on 127.0.0.1,
and loaded with wrk: a plain GET (200), a conditional GET with the ETag the server gave
(304), and a GET accepting gzip (200; nginx serves a pre-compressed atom.xml.gz with
gzip_static, as we serve a gzip computed once, so neither measures zlib per request).
Before loading, one request each checks that the server answers 200 without the header
and 304 with it. Server CPU is read from /proc, so a saturated server shows as ~100 %.

Then strace, if present, watches our server answer conditional and plain GETs: what it
opens, stats and reads per request (it must neither read atom.xml again nor touch a store).

    python -m bench.serve [--seconds 5] [--connections 16] [--repeat 1]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from aggregator.config import load_config
from aggregator.poll import utc_now
from aggregator.publish import publish_timeline
from aggregator.store.sqlite import SqliteStore
from bench.publish import build

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
IDENTITY = {"Accept-Encoding": "identity"}  # wrk sends no Accept-Encoding; httpx would


@dataclass(frozen=True)
class Load:
    server: str
    case: str
    rps: float
    p99_ms: float
    errors: int
    cpu_percent: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its direct children (nginx's workers)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


@contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` for the duration of the block; always stopped by its PID afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(url, headers=IDENTITY, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within 30 s: {log.read_text(errors='replace')}")


def _check_conditional(name: str, url: str) -> str:
    """The ETag a plain GET returns, after checking it earns a 304 (and no header, a 200)."""
    plain = httpx.get(url, headers=IDENTITY, timeout=5)
    etag: str | None = plain.headers.get("etag")
    if plain.status_code != 200 or not etag:
        raise SystemExit(f"{name}: GET {url} gave {plain.status_code}, ETag {etag!r}")
    again = httpx.get(url, headers={**IDENTITY, "If-None-Match": etag}, timeout=5)
    if again.status_code != 304 or again.content:
        raise SystemExit(f"{name}: If-None-Match {etag} gave {again.status_code}, not 304")
    zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"}, timeout=5)
    if zipped.headers.get("content-encoding") != "gzip":
        raise SystemExit(f"{name}: Accept-Encoding: gzip was not answered with gzip")
    print(
        f"{name}: 200 ({len(plain.content)} bytes, ETag {etag}), 304 with If-None-Match, "
        f"gzip {zipped.headers.get('content-length')} bytes"
    )
    return etag


def _wrk(url: str, headers: dict[str, str], seconds: float, connections: int) -> tuple[float, ...]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    for key, value in headers.items():
        argv += ["-H", f"{key}: {value}"]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    if rps is None or p99 is None:
        raise SystemExit(f"cannot read wrk's output:\n{output}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(bad.group(1)) if bad else 0
    return float(rps.group(1)), float(p99.group(1)) * scale, float(errors)


def _load(
    name: str, pid: int, url: str, etag: str, *, seconds: float, connections: int
) -> list[Load]:
    results = []
    for case, headers in (
        ("200 plain", {}),
        ("304 If-None-Match", {"If-None-Match": etag}),
        ("200 gzip", {"Accept-Encoding": "gzip"}),
    ):
        cpu = _tree_cpu_seconds(pid)
        started = time.perf_counter()
        rps, p99, errors = _wrk(url, headers, seconds, connections)
        elapsed = time.perf_counter() - started
        percent = 100 * (_tree_cpu_seconds(pid) - cpu) / elapsed
        results.append(Load(name, case, rps, p99, int(errors), percent))
    return results


def _nginx_conf(work: Path, output: Path, port: int) -> Path:
    conf = work / "nginx.conf"
    temp = work / "nginx-temp"
    temp.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temp dir
    conf.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    etag on;
    gzip off;
    gzip_static on;
    keepalive_requests 1000000;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {output};
        location = /atom.xml {{ types {{ }} default_type "application/atom+xml; charset=utf-8"; }}
    }}
}}
""",
        encoding="utf-8",
    )
    return conf


def _publish(work: Path) -> tuple[Path, Path]:
    """A realistic output directory: 200 items out of a 2,000-entry store; (config, output)."""
    config_path = build(work, 2000, 50, utc_now().replace(microsecond=0))
    config = load_config(config_path)
    store = SqliteStore.open(config.store.path)
    try:
        publish_timeline(config, store, utc_now())
    finally:
        store.close()
    output = config.publish.output_dir
    atom = output / "atom.xml"
    # What gzip_static serves; the same bytes our server computes once per version.
    (output / "atom.xml.gz").write_bytes(gzip.compress(atom.read_bytes(), mtime=0))
    os.utime(output / "atom.xml.gz", ns=(atom.stat().st_atime_ns, atom.stat().st_mtime_ns))
    return config_path, output


def _serve_config(work: Path, output: Path, port: int) -> Path:
    path = work / "serve.toml"
    path.write_text(
        f'[publish]\noutput_dir = "{output}"\n[server]\nhost = "127.0.0.1"\nport = {port}\n'
        '[[feeds]]\nname = "unused"\nurl = "https://example.org/feed.xml"\n',
        encoding="utf-8",
    )
    return path


_SYSCALLS = {  # what strace -y shows, per request
    "open of atom.xml": r"open(at)?\(.*atom\.xml",
    "stat/lstat/readlink": r"(stat|statx|lstat|readlink)\w*\(",
    "read of atom.xml": r"\bp?read\w*\(\d+</[^>]*atom\.xml>",
    "traced syscalls in all": r"^\d+\s+\w+\(",
}


def _trace(pid: int, url: str, etag: str, work: Path, requests: int = 200) -> list[str]:
    """strace our server through `requests` conditional GETs, then as many plain ones."""
    lines = []
    for label, headers in (
        ("304 (If-None-Match)", {**IDENTITY, "If-None-Match": etag}),
        ("200 (plain)", IDENTITY),
    ):
        out = work / "strace.txt"
        argv = ["strace", "-f", "-qq", "-y", "-o", str(out), "-p", str(pid)]
        argv += ["-e", "trace=%file,%desc"]
        tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.5)  # let strace attach to every thread
            with httpx.Client(headers=headers, timeout=5) as client:
                statuses = {client.get(url).status_code for _ in range(requests)}
            time.sleep(0.5)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=15)
        calls = [line for line in out.read_text(errors="replace").splitlines() if "(" in line]

        per_request = {
            what: sum(1 for c in calls if re.search(pattern, c)) / requests
            for what, pattern in _SYSCALLS.items()
        }
        store = sum(1 for c in calls if re.search(r"\.db\b|\.sqlite|-wal>|-shm>", c))
        lines.append(
            f"  {label}, statuses {sorted(statuses)}: per request "
            + ", ".join(f"{n:g} {what}" for what, n in per_request.items())
            + f"; store files touched: {store}"
        )
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        print(
            f"error: {' and '.join(missing)} not found; install with "
            "`apt-get install -y wrk nginx` (no numbers without them)",
            file=sys.stderr,
        )
        sys.exit(1)
    results: list[Load] = []
    trace: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aggregator-serve-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's worker reads from here
        _, output = _publish(work)
        ours_port, nginx_port = _free_port(), _free_port()
        ours_argv = [sys.executable, "-m", "aggregator", "serve"]
        ours_argv += ["--config", str(_serve_config(work, output, ours_port))]
        nginx_argv = ["nginx", "-p", str(work), "-e", str(work / "nginx-error.log")]
        nginx_argv += ["-c", str(_nginx_conf(work, output, nginx_port))]
        with (
            _process(ours_argv, work / "ours.log") as ours,
            _process(nginx_argv, work / "nginx.log") as nginx,
        ):
            servers = {
                "aggregator": (ours, f"http://127.0.0.1:{ours_port}/atom.xml", "ours.log"),
                "nginx": (nginx, f"http://127.0.0.1:{nginx_port}/atom.xml", "nginx.log"),
            }
            etags = {}
            for name, (process, url, log) in servers.items():
                _wait_ready(url, process, work / log)
                etags[name] = _check_conditional(name, url)
            for _ in range(args.repeat):
                for name, (process, url, _) in servers.items():
                    results += _load(
                        name,
                        process.pid,
                        url,
                        etags[name],
                        seconds=args.seconds,
                        connections=args.connections,
                    )
            if shutil.which("strace"):
                trace = _trace(ours.pid, servers["aggregator"][1], etags["aggregator"], work)
    _report(results, args, trace)


def _report(results: list[Load], args: argparse.Namespace, trace: list[str]) -> None:
    print(
        f"\n/atom.xml on 127.0.0.1, wrk -t1 -c{args.connections} -d{args.seconds:g}s, "
        "one server process (nginx: 1 worker)"
    )
    header = f"{'server':<11} {'case':<18} {'req/s':>9} {'p99 ms':>7} {'errors':>6} {'cpu %':>6}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.server:<11} {r.case:<18} {r.rps:9.0f} {r.p99_ms:7.2f} {r.errors:6d} "
            f"{r.cpu_percent:6.0f}"
        )
    print("\nours/nginx, requests per second (best of each):")
    for case in dict.fromkeys(r.case for r in results):
        ours = max(r.rps for r in results if r.case == case and r.server == "aggregator")
        nginx = max(r.rps for r in results if r.case == case and r.server == "nginx")
        print(f"  {case:<18} {ours / nginx:6.3f}  ({ours:.0f} vs {nginx:.0f})")
    for r in results:
        if r.cpu_percent < 50 and r.p99_ms >= 35:
            print(
                f"note: {r.server} {r.case}: server mostly idle yet p99 {r.p99_ms:.0f} ms, the "
                "signature of Nagle + delayed ACK (~40 ms per keep-alive response sent in two "
                "writes): is TCP_NODELAY set on accepted sockets?"
            )
            break
    if trace:
        print("\nstrace of `aggregator serve` (no store is opened by this command):")
        print("\n".join(trace))
    else:
        print("\n(strace not installed: no syscall trace of the conditional path)")


if __name__ == "__main__":
    main(sys.argv[1:])
