"""Benchmark: what `retort guard` adds to a request, side by side with LiteLLM (not a test).

Against one fast local upstream (a raw-asyncio OpenAI-compatible server in this file that
answers /v1/chat/completions and /v1/completions instantly, streamed or not), at concurrency
1, 32 and 128, the same load through
  direct    the upstream itself
  guard     `retort guard serve` with a key whose tier's limits are never reached
  guard-hashes  the same with `audit: {bodies: hashes}` (the log keeps digests, not text)
  litellm   LiteLLM's proxy (pinned below, in its own venv), master key and rpm limits set
and reports p50/p99 latency, requests/s, the latency each proxy *adds* over direct (paired
within a round, then the median over rounds) and the CPU each proxy spends per request.

The load is `wrk` (C, one thread, keep-alive connections = concurrency) so the client takes as
little of this 2-core machine as possible. Setups are interleaved in rounds (shuffled order per
cell) and each run records the CPU the rest of the machine used meanwhile ("foreign cores").

    .venv/bin/python bench/guard.py                       # ~4 min → bench/results/guard.json
    .venv/bin/python bench/guard.py --rounds 5 --duration 5 --modes chat,stream,completions
    .venv/bin/python bench/guard.py --setups direct,litellm --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "guard.json"
BENCH_VENV = ROOT / ".bench-venv"
# After both compromised releases (1.82.7/1.82.8, March 2026; 1.107.0, October 2026), and the
# newest whose [proxy] extra resolves on the index this project uses (1.108.8+ need
# litellm-enterprise/litellm-proxy releases it does not carry).
LITELLM = "litellm[proxy]==1.108.7"
MODEL = "bench-model"
MASTER_KEY = "sk-bench-master"
# guard-hashes: guard with `audit: {bodies: hashes}` (the log keeps sha256 digests, not text).
SETUPS = ("direct", "guard", "guard-hashes", "litellm")
MODES = {  # mode → (path, request body)
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hello."}]}),
    "stream": (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Say hello."}], "stream": True},
    ),
    "completions": ("/v1/completions", {"prompt": "Say hello."}),
}


class BenchError(RuntimeError):
    """A setup did not start, or did not answer the way the bench needs; the message says which."""


# --- the fake upstream --------------------------------------------------------------------------

USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
WORDS = ["Hello", " from", " the", " bench", " upstream", "."]


def _canned() -> dict[str, bytes]:
    chat = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(WORDS)},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    text = {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {"index": 0, "text": "".join(WORDS), "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": USAGE,
    }
    models = {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]}

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
        choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
        event = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": choices,
        }
        if usage:
            event["usage"] = usage
        data = b"data: " + json.dumps(event).encode() + b"\n\n"
        return b"%x\r\n%s\r\n" % (len(data), data)  # one HTTP chunk per SSE event

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": w}) for w in WORDS] + [chunk({}, finish="stop")]
    done = b"data: [DONE]\n\n"
    tail = b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done)
    return {
        "chat": json.dumps(chat).encode(),
        "text": json.dumps(text).encode(),
        "models": json.dumps(models).encode(),
        "stream": b"".join(events) + tail,
        "stream_usage": b"".join(events) + chunk({}, usage=USAGE) + tail,
    }


class _Upstream(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies: all that OpenAI clients and proxies send."""

    canned = _canned()
    streaming = re.compile(rb'"stream"\s*:\s*true')

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1")
            length = re.search(r"(?im)^content-length:\s*(\d+)", head)
            size = int(length.group(1)) if length else 0
            if len(self.buffer) < end + 4 + size:
                return  # the body is still arriving
            body = self.buffer[end + 4 : end + 4 + size]
            self.buffer = self.buffer[end + 4 + size :]
            self.transport.write(self.respond(head.split(" ", 2)[1], body))

    def respond(self, path: str, body: bytes) -> bytes:
        path = path.split("?")[0].removeprefix("/v1")
        if path in ("/chat/completions", "/completions") and self.streaming.search(body):
            key = "stream_usage" if b"include_usage" in body else "stream"
            head = b"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            return b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + self.canned[key]
        key = {"/chat/completions": "chat", "/completions": "text"}.get(path, "models")
        payload = self.canned[key]
        head = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(payload)
        return b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + payload


def serve_upstream(port: int) -> None:
    """Run the fake upstream on 127.0.0.1:port until killed."""

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Upstream, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


# --- tools and processes ------------------------------------------------------------------------


def ensure_wrk() -> str:
    """`wrk` from Debian's packages, installed on first use (the bench runs as root here)."""
    if not shutil.which("wrk"):
        if os.geteuid() != 0:
            sys.exit("bench/guard.py: needs `wrk`; run `sudo apt-get install -y wrk` first")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk")


def ensure_litellm() -> Path:
    """LiteLLM's proxy in .bench-venv/, never in the project's venv; created on first use."""
    litellm = BENCH_VENV / "bin" / "litellm"
    stamp = BENCH_VENV / ".installed"
    if litellm.exists() and stamp.exists() and stamp.read_text() == LITELLM:
        return litellm
    if not (BENCH_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    pip = [str(BENCH_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    # The proxy needs no torch; should a dependency ever ask for one, fail instead of
    # downloading a multi-GB CUDA build.
    constraints = BENCH_VENV / "constraints.txt"
    constraints.write_text("torch<0\n")
    subprocess.run([*pip, "-c", str(constraints), LITELLM], check=True)
    stamp.write_text(LITELLM)
    return litellm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, argv: list[str], work: Path, env: dict | None = None) -> subprocess.Popen:
    log = (work / f"{name}.log").open("wb")
    # Own process group, so stopping it also stops any workers it forked.
    return subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_ready(name: str, proc: subprocess.Popen, url: str, work: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    tail = (work / f"{name}.log").read_text(errors="replace")[-3000:]
    raise BenchError(f"{name} did not answer {url} within {timeout:.0f} s; its log ends:\n{tail}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants, from /proc."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def machine_busy() -> float:
    """Busy CPU-seconds of the whole machine since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


# --- the setups ---------------------------------------------------------------------------------


def litellm_config(upstream: str) -> str:
    # rpm/tpm on the deployment, enforced by usage-based routing, and a global concurrency cap:
    # the limits LiteLLM can enforce for a master key with no database behind it. All far above
    # what this machine can send, so nothing is throttled.
    return f"""\
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {upstream}/v1
      api_key: sk-upstream
      rpm: 100000000
      tpm: 10000000000
router_settings:
  routing_strategy: usage-based-routing-v2
  enable_pre_call_checks: true
general_settings:
  master_key: {MASTER_KEY}
  global_max_parallel_requests: 100000
litellm_settings:
  telemetry: false
"""


def start_litellm(upstream: str, work: Path, procs: list) -> dict:
    litellm = ensure_litellm()
    (work / "litellm.yaml").write_text(litellm_config(upstream))
    port = free_port()
    # Offline: the model cost map ships in the package; nothing may be fetched at start-up.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    argv = [str(litellm), "--config", str(work / "litellm.yaml")]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    procs.append(proc := start("litellm", argv, work, env))
    url = f"http://127.0.0.1:{port}"
    wait_ready("litellm", proc, f"{url}/health/liveliness", work, timeout=180)
    return {"url": url, "key": MASTER_KEY, "pid": proc.pid}


def guard_policy(bodies: str = "full") -> str:
    # Every limit set (so each is counted) and far above what this machine can send.
    return f"""\
tiers:
  bench:
    requests_per_minute: 100000000
    input_tokens_per_minute: 10000000000
    output_tokens_per_minute: 10000000000
    tokens_per_day: 1000000000000
    concurrent: 100000
audit:
  bodies: {bodies}
"""


def start_guard(name: str, upstream: str, work: Path, procs: list, bodies: str) -> dict:
    retort = str(Path(sys.executable).with_name("retort"))
    policy, db = work / f"{name}.yaml", work / f"{name}.sqlite"
    policy.write_text(guard_policy(bodies))
    create = [retort, "guard", "keys", "create", "--name", "bench", "--tier", "bench"]
    created = subprocess.run(
        [*create, "--db", str(db), "--policy", str(policy)], capture_output=True, text=True
    )
    if created.returncode != 0:
        raise BenchError(
            f"`retort guard keys create` failed (--setups direct,litellm benches without guard):"
            f"\n{created.stderr[-3000:]}"
        )
    key = created.stdout.strip().splitlines()[-1].strip()
    port = free_port()
    argv = [retort, "guard", "serve", "--upstream", f"{upstream}/v1", "--policy", str(policy)]
    argv += ["--db", str(db), "--host", "127.0.0.1", "--port", str(port)]
    procs.append(proc := start(name, argv, work))
    url = f"http://127.0.0.1:{port}"
    wait_ready(name, proc, f"{url}/healthz", work, timeout=60)
    return {"url": url, "key": key, "pid": proc.pid}


def smoke(name: str, setup: dict, modes: list[str]) -> None:
    """One request per mode through the setup; the canned answer must come back intact."""
    headers = {"Authorization": f"Bearer {setup['key']}"}
    for mode in modes:
        path, body = MODES[mode]
        r = httpx.post(
            setup["url"] + path, json={"model": MODEL, **body}, headers=headers, timeout=30
        )
        ok = r.status_code == 200 and ("bench" in r.text)
        if mode == "stream":
            ok = ok and "[DONE]" in r.text
        if not ok:
            raise BenchError(f"{name} {mode}: HTTP {r.status_code}: {r.text[:500]}")


# --- the load -----------------------------------------------------------------------------------

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,"mean_us":%%.1f,' ..
    '"max_us":%%d,"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def load(wrk: str, setup: dict, mode: str, conc: int, seconds: int, work: Path) -> dict:
    """One wrk run; latency, throughput, and the CPU each party spent meanwhile."""
    path, body = MODES[mode]
    script = work / f"wrk-{mode}-{setup['key'][-6:]}.lua"
    script.write_text(
        WRK_SCRIPT % {"body": json.dumps({"model": MODEL, **body}), "key": setup["key"]}
    )
    argv = [wrk, "-t1", f"-c{conc}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script)]
    pids = {"proxy": setup.get("pid"), "upstream": setup["upstream_pid"]}
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items() if p}
    child0, busy0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy(), time.time()
    out = subprocess.run([*argv, setup["url"] + path], capture_output=True, text=True)
    wall, busy = time.time() - t0, machine_busy() - busy0
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items() if p}
    cpu["wrk"] = child.ru_utime + child.ru_stime - child0.ru_utime - child0.ru_stime
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stderr[-1000:]}")
    r = json.loads(line.removeprefix("RESULT "))
    n = max(r["requests"], 1)
    return {
        "p50_ms": r["p50_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "mean_ms": r["mean_us"] / 1e3,
        "max_ms": r["max_us"] / 1e3,
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "requests": r["requests"],
        "errors": sum(r["errors"].values()),
        "error_kinds": r["errors"],
        "cpu_ms_per_req": {k: 1e3 * v / n for k, v in cpu.items()},
        "foreign_cores": max(busy - sum(cpu.values()), 0.0) / wall,
    }


# --- the run ------------------------------------------------------------------------------------


def _median(rounds: dict[int, dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds.values())


def summarise(runs: list[dict], setups: list[str]) -> list[dict]:
    """Medians over rounds per (mode, concurrency, setup); added latency paired within rounds."""
    cells = {}
    for run in runs:
        cells.setdefault((run["mode"], run["concurrency"]), {}).setdefault(run["setup"], {})
        cells[(run["mode"], run["concurrency"])][run["setup"]][run["round"]] = run
    rows = []
    for (mode, conc), by_setup in cells.items():
        for name in setups:
            rounds = by_setup.get(name, {})
            if not rounds:
                continue
            row = {"mode": mode, "concurrency": conc, "setup": name, "rounds": len(rounds)}
            row |= {k: _median(rounds, k) for k in ("p50_ms", "p99_ms", "rps", "foreign_cores")}
            row["rps_min"] = min(r["rps"] for r in rounds.values())
            row["rps_max"] = max(r["rps"] for r in rounds.values())
            row["errors"] = sum(r["errors"] for r in rounds.values())
            row["proxy_cpu_ms_per_req"] = statistics.median(
                r["cpu_ms_per_req"].get("proxy", 0.0) for r in rounds.values()
            )
            direct = by_setup.get("direct", {})
            paired = [i for i in rounds if i in direct]
            if name != "direct" and paired:
                for k in ("p50_ms", "p99_ms"):
                    diffs = [rounds[i][k] - direct[i][k] for i in paired]
                    row[f"added_{k}"] = statistics.median(diffs)
            rows.append(row)
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """guard ÷ LiteLLM per cell: below 1 is better for added latency and CPU, above 1 for req/s."""
    index = {(r["mode"], r["concurrency"], r["setup"]): r for r in rows}
    out = []
    for (mode, conc, name), g in index.items():
        lite = index.get((mode, conc, "litellm"))
        if not name.startswith("guard") or lite is None:
            continue
        ratio = {"mode": mode, "concurrency": conc, "setup": name}
        for k in ("added_p50_ms", "added_p99_ms", "rps", "proxy_cpu_ms_per_req"):
            if g.get(k) is not None and lite.get(k):
                ratio[k] = g[k] / lite[k]
        ratio["goal_added_p50"] = g.get("added_p50_ms", 1e9) <= min(
            lite.get("added_p50_ms", 0), 2.0
        )
        ratio["goal_rps"] = g["rps"] >= lite["rps"]
        out.append(ratio)
    return out


def table(rows: list[dict], rats: list[dict]) -> str:
    def f(v: float | None, fmt: str = "{:.2f}") -> str:
        return "" if v is None else fmt.format(v)

    lines = [
        "| mode | c | setup | p50 ms | p99 ms | req/s | added p50 ms | added p99 ms "
        "| proxy CPU ms/req | foreign cores | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['concurrency']} | {r['setup']} | {f(r['p50_ms'])} "
            f"| {f(r['p99_ms'])} | {f(r['rps'], '{:.0f}')} | {f(r.get('added_p50_ms'))} "
            f"| {f(r.get('added_p99_ms'))} | {f(r['proxy_cpu_ms_per_req'] or None)} "
            f"| {f(r['foreign_cores'])} | {r['errors']} |"
        )
    if rats:
        lines += [
            "",
            "| mode | c | ÷ LiteLLM | added p50 | added p99 | req/s | CPU/req "
            "| goal: added p50 ≤ LiteLLM's and ≤ 2 ms | goal: req/s ≥ LiteLLM's |",
            "|---|---:|---|---:|---:|---:|---:|---|---|",
        ]
        for q in rats:
            lines.append(
                f"| {q['mode']} | {q['concurrency']} | {q['setup']} | {f(q.get('added_p50_ms'))} "
                f"| {f(q.get('added_p99_ms'))} | {f(q.get('rps'))} "
                f"| {f(q.get('proxy_cpu_ms_per_req'))} "
                f"| {'met' if q['goal_added_p50'] else 'missed'} "
                f"| {'met' if q['goal_rps'] else 'missed'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell")
    parser.add_argument("--duration", type=int, default=3, help="whole seconds per wrk run")
    parser.add_argument("--concurrency", default="1,32,128", help="comma-separated")
    parser.add_argument("--modes", default="chat,stream", help=f"from {','.join(MODES)}")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"from {','.join(SETUPS)}")
    parser.add_argument("--seed", type=int, default=0, help="order of setups within a cell")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    concs = [int(c) for c in args.concurrency.split(",")]
    modes, setups = args.modes.split(","), args.setups.split(",")
    for value, known, flag in ((modes, MODES, "--modes"), (setups, SETUPS, "--setups")):
        if unknown := sorted(set(value) - set(known)):
            parser.error(f"{flag}: unknown {unknown}; choose from {','.join(known)}")

    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="retort-bench-guard-"))
    procs: list[subprocess.Popen] = []
    load_before = os.getloadavg()
    try:
        port = free_port()
        argv = [sys.executable, __file__, "--serve-upstream", str(port)]
        procs.append(upstream_proc := start("upstream", argv, work))
        upstream = f"http://127.0.0.1:{port}"
        wait_ready("upstream", upstream_proc, f"{upstream}/v1/models", work, timeout=30)
        live = {"direct": {"url": upstream, "key": "sk-upstream", "pid": None}}
        for name, bodies in (("guard", "full"), ("guard-hashes", "hashes")):
            if name in setups:
                live[name] = start_guard(name, upstream, work, procs, bodies)
        if "litellm" in setups:
            live["litellm"] = start_litellm(upstream, work, procs)
        live = {name: live[name] for name in setups}
        for name, setup in live.items():
            setup["upstream_pid"] = upstream_proc.pid
            smoke(name, setup, modes)
            load(wrk, setup, "chat", 32, 1, work)  # warm-up: pools, caches, JIT-free paths
        print(f"setups up; logs in {work}", flush=True)

        # Seconds since the setups came up, per run: a proxy whose state grows with traffic
        # (a limiter's windows, say) slows down over the run, and this shows when.
        rng, runs, loads, t_up = random.Random(args.seed), [], [], time.time()
        for rnd in range(args.rounds):
            loads.append(os.getloadavg())
            for mode in modes:
                for conc in concs:
                    order = list(live)
                    rng.shuffle(order)
                    for name in order:
                        run = load(wrk, live[name], mode, conc, args.duration, work)
                        runs.append({"round": rnd, "mode": mode, "concurrency": conc} | run)
                        runs[-1] |= {"setup": name, "t_s": round(time.time() - t_up, 1)}
                        print(
                            f"round {rnd} {mode:11} c={conc:<3} {name:8} "
                            f"p50 {run['p50_ms']:7.2f} ms  p99 {run['p99_ms']:7.2f} ms  "
                            f"{run['rps']:7.0f} req/s  errors {run['errors']}  "
                            f"foreign {run['foreign_cores']:.2f} cores",
                            flush=True,
                        )
    except BenchError as e:
        sys.exit(f"bench/guard.py: {e}\nlogs: {work}")
    finally:
        for proc in reversed(procs):
            stop(proc)

    rows = summarise(runs, setups)
    rats = ratios(rows)
    litellm_version = None
    if "litellm" in setups:
        show = [str(BENCH_VENV / "bin" / "python"), "-m", "pip", "show", "litellm"]
        shown = subprocess.run(show, capture_output=True, text=True).stdout
        litellm_version = re.search(r"(?m)^Version: (\S+)", shown).group(1)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result = {
        "command": " ".join(["bench/guard.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit.stdout.strip(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_per_round": loads,
            "loadavg_after": os.getloadavg(),
        },
        "load_generator": subprocess.run([wrk, "-v"], capture_output=True, text=True)
        .stdout.split("\n")[0]
        .strip(),
        "litellm": litellm_version,
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "concurrency": concs,
            "modes": modes,
            "setups": setups,
            "litellm_config": litellm_config("http://127.0.0.1:PORT")
            if "litellm" in setups
            else None,
            "guard_policy": guard_policy() if "guard" in setups else None,
            "guard_hashes_policy": guard_policy("hashes") if "guard-hashes" in setups else None,
        },
        "summary": rows,
        "guard_vs_litellm": rats,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(rows, rats))
    print(f"\nload average before {load_before}, after {result['machine']['loadavg_after']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
