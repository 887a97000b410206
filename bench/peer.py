"""create, get and heartbeat side by side: elizaOS's sessions router, this project, and a floor.

    python bench/peer.py                       # 1 round, 10 s per scenario and server
    python bench/peer.py --rounds 3 --chart docs/peer.png
    python bench/peer.py --models sync,gthread,uvicorn,django-asgi   # other serving models too
    python bench/peer.py --smoke               # 2 s per run, no elizaOS

Servers (all on this machine, started and stopped by the script):

- **elizaOS**: the sessions router of the published ``@elizaos/server`` 1.7.2,
  installed with npm into ``bench/.peer/`` (git-ignored). Its ``dist/index.js``
  does not export ``createSessionsRouter``, so a copy of it with that export
  added is loaded; agents and channels are stubbed with no-ops, the router is
  mounted on Express with ``express.json()``, one Node process. Sessions live
  in memory.
- **project**: gunicorn exactly as ``make run`` serves it (``gunicorn.conf.py``,
  ``messaging_project.asgi:application``, the default worker and thread
  counts) on a scratch PostgreSQL database, with rate limiting off
  (``SESSIONS_THROTTLE_RATE=off``: one client sends everything) and the access
  log off.
- **floor**: ``bench/floor_hot_paths.py``, the statements each endpoint runs
  (captured from the project) behind a bare WSGI application under the same
  gunicorn settings, same database.
- with ``--models``: the project under other serving models (see ``bench/serving_models.py``).

wrk drives each (2 threads, 16 connections, keep-alive, 10 s) for each scenario,
the servers alternating inside each scenario and round. Requests carry the
admin key, which every route accepts. The table gives req/s, p50 and p99 (wrk's
latency distribution), the server's peak resident memory (all its processes)
and process count, and the ratio of each to elizaOS's req/s in the same round.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-secret-key")

from bench.common import create_database, drop_database, machine_report, manage, table  # noqa: E402
from bench.server import ADMIN_KEY, Client, Gunicorn  # noqa: E402
from bench.serving_models import MODELS, known, load_average, start_model  # noqa: E402

DATABASE = "srv_bench_peer"
BASE = "/api/messaging/sessions"
PEER_DIR = ROOT / "bench" / ".peer"
PEER_PACKAGE = "@elizaos/server@1.7.2"
PEER_PORT = 3400
PORTS = iter(range(3310, 3400))
SCENARIOS = ("create", "get", "heartbeat")
SESSIONS_PER_SERVER = 1000

PEER_SERVER = """\
import express from "express";
import { createSessionsRouter } from "./node_modules/@elizaos/server/dist/peer-index.js";

// Stubs: any agent exists with no settings; channels are not stored.
const agent = (agentId) => ({ agentId, getSetting: () => undefined });
const elizaOS = { getAgent: (agentId) => agent(agentId), getAgents: () => [] };
const serverInstance = {
  messageServerId: "00000000-0000-0000-0000-000000000000",
  createChannel: async (channel) => channel,
  addParticipantsToChannel: async () => undefined,
  getChannelDetails: async () => null,
};
const app = express();
app.use(express.json());
app.use("/api/messaging", createSessionsRouter(elizaOS, serverInstance));
app.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening"));
"""

CREATE_LUA = """\
local function uuid()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function (c)
    return string.format("%x", c == "x" and math.random(0, 15) or math.random(8, 11))
  end))
end
request = function()
  local body = '{"agentId":"' .. uuid() .. '","userId":"' .. uuid() .. '"}'
  return wrk.format("POST", "BASE", {["Content-Type"] = "application/json", ["X-API-KEY"] = "KEY"}, body)
end
"""

SESSION_LUA = """\
local ids = {IDS}
request = function()
  return wrk.format("METHOD", "BASE/" .. ids[math.random(#ids)] .. "SUFFIX", {["X-API-KEY"] = "KEY"})
end
"""


# -- elizaOS -----------------------------------------------------------------------------


class Peer:
    """elizaOS's sessions router on Express, one Node process."""

    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None
        self.workers = 1

    @staticmethod
    def install() -> None:
        """npm-install the package into bench/.peer and add the export its dist lacks."""
        PEER_DIR.mkdir(exist_ok=True)
        dist = PEER_DIR / "node_modules" / "@elizaos" / "server" / "dist"
        if not (dist / "index.js").is_file():
            (PEER_DIR / "package.json").write_text('{"name": "peer", "private": true}\n')
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", PEER_PACKAGE, "express"],
                cwd=PEER_DIR, check=True, capture_output=True, timeout=600,
            )
        source = (dist / "index.js").read_text()
        marker = "\nexport {\n"
        assert source.count(marker) == 1, "the dist's export list moved"
        (dist / "peer-index.js").write_text(
            source.replace(marker, "\nexport {\n  createSessionsRouter,\n")
        )
        (PEER_DIR / "peer-server.mjs").write_text(PEER_SERVER)

    def __enter__(self) -> "Peer":
        self.process = subprocess.Popen(
            ["node", "peer-server.mjs"], cwd=PEER_DIR, env={**os.environ, "PORT": str(self.port)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if self.process.stdout.readline().strip() != "listening":
            raise RuntimeError("the elizaOS router did not start")
        return self

    def __exit__(self, *exc) -> None:
        # The router's own SIGTERM handler keeps the process alive: SIGKILL after a moment.
        self.process.terminate()
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def rss_mib(self) -> float:
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            return 0.0


# -- the floor's statements ----------------------------------------------------------------


CAPTURE = (
    "import django, json, sys; django.setup(); from bench.peer import capture_operations; "
    "sys.stdout.write(json.dumps(capture_operations()))"
)


def capture_operations() -> dict:
    """Run create, get and heartbeat once through Django; return their statements, encoded."""
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1", HTTP_X_API_KEY=ADMIN_KEY)
    calls: list[tuple[str, tuple, bool]] = []

    def record(execute, sql, params, many, context):
        calls.append((sql, tuple(params or ()), connection.in_atomic_block))
        return execute(sql, params, many, context)

    # A first create stores the default timeout configuration; the captured one reuses it.
    warm_up = json.dumps({"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())})
    assert client.post(BASE, warm_up, content_type="application/json").status_code == 201
    ids = {"agent": uuid.uuid4(), "user": uuid.uuid4()}
    operations = {}
    with connection.execute_wrapper(record):
        body = json.dumps({"agentId": str(ids["agent"]), "userId": str(ids["user"])})
        response = client.post(BASE, body, content_type="application/json")
        assert response.status_code == 201, response.content
        ids["session"] = uuid.UUID(response.json()["sessionId"])
        operations["create"], calls[:] = list(calls), []
        response = client.get(f"{BASE}/{ids['session']}")
        assert response.status_code == 200, response.content
        operations["get"], calls[:] = list(calls), []
        response = client.post(f"{BASE}/{ids['session']}/heartbeat")
        assert response.status_code == 200, response.content
        operations["heartbeat"] = list(calls)
    return {name: _encode(statements, ids) for name, statements in operations.items()}


def _encode(statements: list, ids: dict) -> list[dict]:
    roles = {value: role for role, value in ids.items()}
    times = [p for _, params, _ in statements for p in params if isinstance(p, datetime.datetime)]
    reference = min(times) if times else None
    atomic = any(in_atomic for _, _, in_atomic in statements)
    encoded = []
    for index, (sql, params, _) in enumerate(statements):
        values = []
        for value in params:
            if isinstance(value, uuid.UUID) and value in roles:
                values.append({"id": roles[value]})
            elif isinstance(value, datetime.datetime):
                values.append({"offset_ms": (value - reference) / datetime.timedelta(milliseconds=1)})
            elif type(value).__name__ in {"Jsonb", "Json"}:
                values.append({"jsonb": value.obj})
            elif isinstance(value, int) and not isinstance(value, bool):
                values.append(int(value))
            else:
                values.append(value)
        encoded.append(
            {"sql": sql, "params": values, "atomic": atomic, "answer": index == len(statements) - 1}
        )
    return encoded


# -- wrk -----------------------------------------------------------------------------------


def lua_scripts(directory: Path, session_ids: list[str]) -> dict[str, Path]:
    quoted = ",".join(f'"{session_id}"' for session_id in session_ids)
    scripts = {
        "create": CREATE_LUA.replace("BASE", BASE).replace("KEY", ADMIN_KEY),
        "get": SESSION_LUA.replace("METHOD", "GET").replace("SUFFIX", ""),
        "heartbeat": SESSION_LUA.replace("METHOD", "POST").replace("SUFFIX", "/heartbeat"),
    }
    paths = {}
    for name, text in scripts.items():
        text = text.replace("IDS", quoted).replace("BASE", BASE).replace("KEY", ADMIN_KEY)
        path = directory / f"{name}-{uuid.uuid4().hex[:8]}.lua"
        path.write_text(text)
        paths[name] = path
    return paths


def wrk(port: int, script: Path, seconds: float, connections: int) -> dict:
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )
    figures = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": 0, "timeouts": 0}
    for line in result.stdout.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            figures["rps"] = float(words[1])
        elif words[:1] == ["50%"]:
            figures["p50"] = _milliseconds(words[1])
        elif words[:1] == ["99%"]:
            figures["p99"] = _milliseconds(words[1])
        elif "Non-2xx" in line:
            figures["errors"] += int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            # connect, read, write: errors; timeout: no answer within wrk's 2 s.
            for part in line.split(":", 1)[1].split(","):
                kind, count = part.split()
                figures["timeouts" if kind == "timeout" else "errors"] += int(count)
    return figures


def _milliseconds(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def create_sessions(port: int, count: int) -> list[str]:
    client = Client(port)
    ids = []
    for _ in range(count):
        status, body = client.request(
            "POST", BASE, {"agentId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
        )
        assert status == 201, body
        ids.append(body["sessionId"])
    client.close()
    return ids


def peak_rss(server, stop: threading.Event, peak: list[float]) -> None:
    while not stop.wait(0.2):
        peak[0] = max(peak[0], server.rss_mib())


def measure(target, script: Path, seconds: float, connections: int) -> dict:
    stop, peak = threading.Event(), [target["server"].rss_mib()]
    sampler = threading.Thread(target=peak_rss, args=(target["server"], stop, peak), daemon=True)
    sampler.start()
    try:
        figures = wrk(target["port"], script, seconds, connections)
    finally:
        stop.set()
        sampler.join()
    figures["rss"] = peak[0]
    figures["load"] = load_average()
    return figures


# -- the run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario and server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--models", default="", help="other serving models, comma-separated")
    parser.add_argument("--no-peer", action="store_true", help="leave elizaOS out")
    parser.add_argument("--no-floor", action="store_true", help="leave the floor out")
    parser.add_argument("--chart", help="write a PNG chart of req/s here")
    parser.add_argument("--smoke", action="store_true", help="2 s per run, no elizaOS")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.no_peer = 2.0, True
    models = [name for name in args.models.split(",") if name]
    unknown = {name for name in models if not known(name)}
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; known: {sorted(MODELS)}")
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")

    print(machine_report())
    print(f"load average before: {load_average()}")
    if not args.no_peer:
        Peer.install()
    url = create_database(DATABASE)
    scratch = Path(tempfile.mkdtemp(prefix="srv_peer_"))
    targets = []
    try:
        manage("migrate", "--noinput", database_url=url)
        captured = subprocess.run(
            [sys.executable, "-c", CAPTURE], cwd=ROOT, check=True, capture_output=True, text=True,
            env={**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "messaging_project.settings",
                 "SESSIONS_ADMIN_API_KEY": ADMIN_KEY, "SESSIONS_THROTTLE_RATE": "off"},
        )
        operations = scratch / "operations.json"
        operations.write_text(captured.stdout)

        with_stack = []
        try:
            if not args.no_peer:
                peer = Peer(PEER_PORT).__enter__()
                with_stack.append(peer)
                targets.append({"name": "elizaOS (memory)", "server": peer, "port": PEER_PORT})
            project = start_model(
                "asgi-threads", database_url=url, port=next(PORTS),
                app="messaging_project.asgi:application",
            ).__enter__()
            with_stack.append(project)
            targets.append({"name": "project", "server": project, "port": project.port})
            if not args.no_floor:
                floor = Gunicorn(
                    database_url=url, workers=project.workers, port=next(PORTS),
                    app="bench.floor_hot_paths:asgi_application",
                    env={"FLOOR_DATABASE_URL": url, "FLOOR_OPERATIONS": str(operations)},
                ).__enter__()
                with_stack.append(floor)
                targets.append({"name": "floor (same SQL)", "server": floor, "port": floor.port})
            for name in models:
                server = start_model(name, database_url=url, port=next(PORTS)).__enter__()
                with_stack.append(server)
                targets.append({"name": f"project, {name}", "server": server, "port": server.port})

            project_ids = create_sessions(project.port, SESSIONS_PER_SERVER)
            for target in targets:
                ids = create_sessions(target["port"], SESSIONS_PER_SERVER) if target["port"] == PEER_PORT else project_ids
                target["scripts"] = lua_scripts(scratch, ids)
                target["workers"] = getattr(target["server"], "workers", 1)

            results = {}  # (scenario, target name) -> list of figures
            for round_number in range(1, args.rounds + 1):
                for scenario in SCENARIOS:
                    for target in targets:
                        figures = measure(target, target["scripts"][scenario], args.seconds, args.connections)
                        results.setdefault((scenario, target["name"]), []).append(figures)
                        print(
                            f"  round {round_number} {scenario:9} {target['name']:28} "
                            f"{figures['rps']:8,.0f} req/s  p50 {figures['p50']:6.1f} ms  "
                            f"p99 {figures['p99']:6.1f} ms  errors {figures['errors']}  "
                            f"timeouts {figures['timeouts']}  "
                            f"load {figures['load']}",
                            flush=True,
                        )
        finally:
            for server in reversed(with_stack):
                server.__exit__(None, None, None)
    finally:
        drop_database(DATABASE)
        shutil.rmtree(scratch, ignore_errors=True)

    rows = []
    for scenario in SCENARIOS:
        peer_runs = results.get((scenario, "elizaOS (memory)"))
        for target in targets:
            runs = results[(scenario, target["name"])]
            rates = [run["rps"] for run in runs]
            ratio = ""
            if peer_runs and target["port"] != PEER_PORT:
                ratios = [run["rps"] / peer["rps"] for run, peer in zip(runs, peer_runs, strict=True)]
                ratio = _span(ratios, "{:.2f}×")
            rows.append([
                scenario, target["name"], _span(rates, "{:,.0f}"),
                _span([run["p50"] for run in runs], "{:.1f}"),
                _span([run["p99"] for run in runs], "{:.1f}"),
                f"{sum(run['errors'] for run in runs)} / {sum(run['timeouts'] for run in runs)}",
                f"{max(run['rss'] for run in runs):.0f}", target["workers"], ratio,
            ])
    print()
    print(table(
        ["scenario", "server", "req/s", "p50 ms", "p99 ms", "errors / timeouts", "peak RSS MiB", "workers",
         "÷ elizaOS"],
        rows,
    ))
    print(f"\n{args.rounds} round(s), {args.seconds:g} s per run, {args.connections} connections; "
          f"load average after: {load_average()}")
    if args.chart:
        chart(results, targets, Path(args.chart))
        print(f"chart: {args.chart}")


def _span(values: list[float], form: str) -> str:
    low, high = min(values), max(values)
    return form.format(low) if form.format(low) == form.format(high) else f"{form.format(low)}–{form.format(high)}"


def chart(results: dict, targets: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(targets)
    for index, target in enumerate(targets):
        means = [
            sum(run["rps"] for run in results[(s, target["name"])]) / len(results[(s, target["name"])])
            for s in SCENARIOS
        ]
        positions = [x + (index - (len(targets) - 1) / 2) * width for x in range(len(SCENARIOS))]
        bars = axes.bar(positions, means, width, label=target["name"])
        axes.bar_label(bars, fmt="%.0f", fontsize=7)
    axes.set_xticks(range(len(SCENARIOS)), SCENARIOS)
    axes.set_ylabel("requests per second (mean of rounds)")
    axes.set_title("wrk, 16 connections, keep-alive; PostgreSQL for the project and the floor")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
