"""Shared by the perf/ scripts: build, pin, start and stop servers, read their CPU time, run the
ringnode load client, and print medians as JSON lines and a table. Every script measures its
baseline in the same run, alternating, with one server core and the client on another."""
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RINGNODE = os.path.join(ROOT, "target", "release", "ringnode")
BASE = os.path.join(ROOT, "perf", "baselines", "target", "release")
TICK = os.sysconf("SC_CLK_TCK")
MEDIAN_KEYS = ["messages_per_s", "server_cpu_s_per_million", "messages_per_server_cpu_s", "server_cpu_util",
               "client_cpu_util", "p50_us", "p99_us"]


def build(baselines=True):
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    if baselines:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=os.path.join(ROOT, "perf", "baselines"),
                       check=True)


def build_rev(rev):
    """Builds ringnode as of git revision `rev` (a worktree under target/, its own target dir) and
    returns the binary's path: the same code measured against an earlier commit, in one run."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    tree = os.path.join(ROOT, "target", "perf-rev", sha)
    if not os.path.isdir(tree):
        subprocess.run(["git", "worktree", "add", "--detach", tree, sha], cwd=ROOT, check=True,
                       capture_output=True)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(ROOT, "target", "perf-rev-target"))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=tree, check=True, env=env)
    return sha, os.path.join(ROOT, "target", "perf-rev-target", "release", "ringnode")


def two_cpus(script):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit(f"{script} needs two CPUs: one for the server, one for the client")
    return cpus[0], cpus[1]


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pinned(cpu):
    return lambda: os.sched_setaffinity(0, {cpu})


def start_server(cmd, cpu):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                         preexec_fn=pinned(cpu), text=True)
    line = p.stdout.readline()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        p.kill()
        raise RuntimeError(f"{cmd[0]} did not start: {line!r}")
    return p, m.group(1)


def stop_server(p):
    """SIGTERM, wait, and return what the server printed after its first line."""
    p.send_signal(signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out or ""


def run_load(name, cmd, load_args, cpu_server, cpu_client):
    """Starts the server, runs `ringnode load ... --json` against it, stops it. Returns the result
    row and the server's closing output."""
    p, addr = start_server(cmd, cpu_server)
    try:
        c0 = cpu_seconds(p.pid)
        t0 = time.monotonic()
        out = subprocess.run([RINGNODE, "load", "--target", addr, "--cores", "1", "--json"] + load_args,
                             capture_output=True, text=True, preexec_fn=pinned(cpu_client), timeout=300)
        wall = time.monotonic() - t0
        c1 = cpu_seconds(p.pid)
    finally:
        tail = stop_server(p)
    if out.returncode != 0:
        raise RuntimeError(f"load against {name} failed: {out.stderr.strip()}")
    r = json.loads(out.stdout)
    msgs = r["messages_received"]
    server_cpu = c1 - c0
    row = {
        "server": name,
        "messages_per_s": r["messages_per_s"],
        "server_cpu_s_per_million": server_cpu / (msgs / 1e6) if msgs else None,
        "messages_per_server_cpu_s": msgs / server_cpu if server_cpu > 0 else None,
        "server_cpu_util": server_cpu / wall,
        "client_cpu_util": sum(r["client_cpu_s"]) / r["elapsed_s"],
        "p50_us": r["latency"]["p50_us"], "p99_us": r["latency"]["p99_us"],
        "errors": sum(r["errors"].values()),
    }
    return row, tail


def alternate(servers, conf, rounds, run_one, log):
    """Runs every server `rounds` times for one configuration, rotating the order each round, and
    returns the median row per server."""
    runs = {k: [] for k in servers}
    order = list(servers)
    for rnd in range(rounds):
        for name in order[rnd % len(order):] + order[:rnd % len(order)]:
            res = run_one(name, servers[name], conf)
            res.update(conf)
            res["round"] = rnd
            runs[name].append(res)
            log.write(json.dumps(res) + "\n")
            log.flush()
    rows = []
    for name, rs in runs.items():
        med = {k: statistics.median([r[k] for r in rs if r.get(k) is not None] or [0]) for k in MEDIAN_KEYS}
        # The noise this run measured: the spread of messages per server CPU-second over rounds.
        per_cpu = [r["messages_per_server_cpu_s"] for r in rs if r.get("messages_per_server_cpu_s")]
        med["spread"] = (max(per_cpu) - min(per_cpu)) / statistics.median(per_cpu) if len(per_cpu) > 1 else 0.0
        extra = {k: v for k, v in rs[-1].items() if k not in MEDIAN_KEYS and k not in ("server", "round")}
        row = {"server": name, **conf, "median_of": len(rs), **med, **extra, "errors": sum(r["errors"] for r in rs)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def open_log(script):
    os.makedirs(os.path.join(ROOT, "perf", "results"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    return stamp, open(os.path.join(ROOT, "perf", "results", f"{script}-{stamp}.jsonl"), "w")


def print_table(title, rows, conf_keys, cpu_server, cpu_client, duration, rounds):
    host = os.uname()
    print(f"\n{title}  kernel {host.release}  server CPU {cpu_server}, client CPU {cpu_client}  "
          f"duration {duration}  median of {rounds}\n")
    head = " | ".join(conf_keys)
    print(f"| {head} | server | msgs/s | server CPU-s per M msgs | msgs per server CPU-s (spread) | server CPU | "
          f"client CPU | p99 µs |")
    print("|" + "---:|" * len(conf_keys) + "---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        confs = " | ".join(str(r[k]) for k in conf_keys)
        print(f"| {confs} | {r['server']} | {r['messages_per_s']:,.0f} | {r['server_cpu_s_per_million']:.2f} | "
              f"{r['messages_per_server_cpu_s']:,.0f} (±{50 * r.get('spread', 0):.0f}%) | "
              f"{100 * r['server_cpu_util']:.0f}% | "
              f"{100 * r['client_cpu_util']:.0f}% | {r['p99_us']:.0f} |")


def print_ratios(rows, confs, ours="ringnode"):
    print(f"\nratios, {ours} messages per server CPU-second over the baseline's:")
    for conf in confs:
        base = {r["server"]: r for r in rows if all(r[k] == conf[k] for k in conf)}
        if ours not in base:
            continue
        parts = [f"{o} {base[ours]['messages_per_server_cpu_s'] / base[o]['messages_per_server_cpu_s']:.2f}x"
                 for o in base if o != ours and base[o]["messages_per_server_cpu_s"]]
        print("  " + ", ".join(f"{k} {v}" for k, v in conf.items()) + ": " + ", ".join(parts))
