#!/usr/bin/env python3
"""Side-by-side benchmark: SIPp and sipshard as caller and callee, on loopback, in one run.

    scripts/side_by_side.py [--seconds 30] [--out bench-results] [--pairs 1,2,3,4]

Pairs (caller -> callee, basic call INVITE/180/200/ACK/BYE, no hold):
  1. SIPp uac           -> SIPp uas
  2. SIPp uac           -> sipshard serve --mode auto-answer
  3. sipshard-load uac  -> sipshard serve
  4. sipshard-load uac  -> SIPp uas

For each pair the script climbs a ladder of rates, one fresh callee per rung, each rung
running `--seconds`; a rung is sustained when fewer than 0.1 % of its calls failed and the
calls were placed at >= 97 % of the asked rate. It reports the highest sustained rung and,
for it: the callee's CPU seconds per 1,000 calls (utime+stime from /proc/PID/stat, kernel
included), the caller's too, INVITE->200 p50/p99 as the caller saw it, and the callee's
peak RSS (VmHWM). Results go to OUT/results.json and a Markdown table on stdout.

SIPp's INVITE->200 comes from its rtd on the 200 (-trace_rtt, every sample, ms
resolution); sipshard-load's from its own HDR histogram (us resolution).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
TICK = os.sysconf("SC_CLK_TCK")

LADDERS = {
    1: [2000, 4000, 6000, 8000, 10000, 12000, 14000],
    2: [2000, 4000, 6000, 8000, 10000, 12000, 14000],
    3: [5000, 10000, 15000, 20000, 25000, 30000, 40000],
    4: [2000, 4000, 6000, 8000, 10000, 12000, 14000],
}
NAMES = {
    1: "SIPp uac -> SIPp uas",
    2: "SIPp uac -> sipshard serve",
    3: "sipshard-load uac -> sipshard serve",
    4: "sipshard-load uac -> SIPp uas",
}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; after the ")" they are 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def start_callee(kind, port, work):
    if kind == "sipp":
        cmd = ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin",
               "-max_socket", "65000"]
    else:
        cmd = [str(RELEASE / "sipshard"), "serve", "--listen", f"127.0.0.1:{port}",
               "--mode", "auto-answer"]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RUST_LOG": "warn"})
    time.sleep(0.7)
    return proc, cmd


def run_sipp_caller(port, rate, seconds, work):
    calls = rate * seconds
    for f in work.glob("uac_*"):
        f.unlink()
    cmd = ["sipp", "-sn", "uac", f"127.0.0.1:{port}", "-i", "127.0.0.1", "-p", "0",
           "-m", str(calls), "-r", str(rate), "-l", str(rate * 4), "-nostdin",
           "-timeout", str(seconds + 60), "-timeout_error", "-trace_stat", "-fd", "1",
           "-trace_rtt", "-rtt_freq", "1000"]
    began = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait()
    elapsed = time.monotonic() - began
    caller_cpu = None  # the process is gone; read from its rusage below
    stat = sorted(work.glob("uac_*_.csv"))
    ok = failed = 0
    if stat:
        rows = stat[-1].read_text().strip().splitlines()
        head = rows[0].split(";")
        last = rows[-1].split(";")
        col = {name: i for i, name in enumerate(head)}
        ok = int(last[col["SuccessfulCall(C)"]])
        failed = int(last[col["FailedCall(C)"]])
    samples = []
    for f in work.glob("uac_*_rtt.csv"):
        for line in f.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    samples.append(float(parts[1]))
                except ValueError:
                    pass
    samples.sort()
    return {
        "cmd": " ".join(cmd),
        "attempted": ok + failed,
        "ok": ok,
        "failed": failed,
        "placing_s": elapsed,
        # Conservative: the wall time includes SIPp's start and the last call's end.
        "achieved": calls / elapsed if ok + failed >= calls else 0.0,
        "p50_ms": percentile(samples, 0.50),
        "p99_ms": percentile(samples, 0.99),
        "caller_cpu_s": caller_cpu,
    }


def run_load_caller(port, rate, seconds, work):
    out = work / "load.json"
    cmd = [str(RELEASE / "sipshard-load"), "uac", "--target", f"127.0.0.1:{port}",
           "--rate", str(rate), "--duration", f"{seconds}s", "--shards", "1",
           "--json", str(out)]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait()
    r = json.loads(out.read_text())
    return {
        "cmd": " ".join(cmd[:1] + ["uac"] + cmd[2:3] + ["..."] + cmd[4:12]),
        "attempted": r["attempted"],
        "ok": r["established"],
        "failed": r["failed"],
        "achieved": r["achieved_rate"],
        "p50_ms": r["latency_ms"]["invite_to_200"]["p50"],
        "p99_ms": r["latency_ms"]["invite_to_200"]["p99"],
        "caller_cpu_s": None,
    }


def children_cpu():
    t = os.times()
    return t.children_user + t.children_system


def rung(pair, rate, seconds, work):
    caller_kind = "sipp" if pair in (1, 2) else "load"
    callee_kind = "sipp" if pair in (1, 4) else "sipshard"
    port = free_port()
    callee, callee_cmd = start_callee(callee_kind, port, work)
    before = cpu_seconds(callee.pid)
    caller_before = children_cpu()
    if caller_kind == "sipp":
        r = run_sipp_caller(port, rate, seconds, work)
    else:
        r = run_load_caller(port, rate, seconds, work)
    r["caller_cpu_s"] = children_cpu() - caller_before
    time.sleep(1.0)
    r["callee_cpu_s"] = cpu_seconds(callee.pid) - before
    r["callee_peak_rss_mb"] = peak_rss_mb(callee.pid)
    r["callee_cmd"] = " ".join(callee_cmd[:1] + callee_cmd[1:])
    callee.terminate()
    try:
        callee.wait(timeout=15)
    except subprocess.TimeoutExpired:
        callee.kill()
        callee.wait()
    r["rate"] = rate
    done = max(r["ok"], 1)
    r["callee_cpu_per_1000"] = r["callee_cpu_s"] * 1000 / done
    r["caller_cpu_per_1000"] = r["caller_cpu_s"] * 1000 / done
    total = max(r["attempted"], 1)
    r["failed_ratio"] = r["failed"] / total
    r["sustained"] = (r["failed_ratio"] < 0.001 and r["attempted"] >= rate * seconds * 0.97
                      and r["achieved"] >= rate * 0.97)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--pairs", default="1,2,3,4")
    ap.add_argument("--rates", default="", help="override the ladder: 1000,2000,...")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--workspace"], cwd=ROOT, check=True)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    results = {"machine": machine(), "seconds": args.seconds, "pairs": {}}
    for pair in [int(p) for p in args.pairs.split(",")]:
        ladder = [int(r) for r in args.rates.split(",")] if args.rates else LADDERS[pair]
        runs = []
        for rate in ladder:
            r = rung(pair, rate, args.seconds, work)
            runs.append(r)
            print(f"{NAMES[pair]:38} rate {rate:6}: ok {r['ok']:8} failed {r['failed']:6} "
                  f"achieved {r['achieved']:8.0f}/s p50 {r['p50_ms']:7.2f} ms p99 {r['p99_ms']:8.2f} ms "
                  f"callee {r['callee_cpu_per_1000']:.3f} s/1000 calls rss {r['callee_peak_rss_mb']:.0f} MB "
                  f"{'ok' if r['sustained'] else 'NOT sustained'}", file=sys.stderr, flush=True)
            if not r["sustained"]:
                break
        best = max((r for r in runs if r["sustained"]), key=lambda r: r["rate"], default=None)
        results["pairs"][NAMES[pair]] = {"best": best, "runs": runs}
        (out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))


def machine():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True).stdout.strip().splitlines()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "sipp": next((l.strip() for l in sipp if "SIPp" in l), "?"),
    }


def table(results):
    lines = [
        "| pair | highest sustained rate | callee CPU s / 1000 calls | caller CPU s / 1000 calls "
        "| INVITE→200 p50 | p99 | callee peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in results["pairs"].items():
        b = p["best"]
        if b is None:
            lines.append(f"| {name} | none of the ladder | | | | | |")
            continue
        if name.startswith("SIPp"):
            # SIPp's clock ticks in whole milliseconds.
            def ms(v):
                return "< 1 ms" if v < 1 else f"{v:.0f} ms"
        else:
            def ms(v):
                return f"{v:.2f} ms"
        lines.append(
            f"| {name} | {b['rate']:,} calls/s | {b['callee_cpu_per_1000']:.3f} | "
            f"{b['caller_cpu_per_1000']:.3f} | {ms(b['p50_ms'])} | {ms(b['p99_ms'])} | "
            f"{b['callee_peak_rss_mb']:.0f} MB |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
