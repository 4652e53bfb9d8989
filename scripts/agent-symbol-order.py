#!/usr/bin/env python3
"""Regenerate src/bin/stratus-agent.order, the order in which the release link lays out the
agent's functions (lld's --symbol-ordering-file; see build.rs).

Why: every page an agent touches in its 17 MB of code is mapped with its neighbours (the
kernel's fault-around), so code an agent runs, scattered among code it never runs, made 11 MiB
of every agent's resident set. Laid out together, the code an agent runs is about 4 MiB.

How: launches the hello example with --servers app servers from the release build in a
temporary state directory, twice, lets it idle (health checks, metrics), terminates it:
  1. under `perf record -e cpu-clock:u`: the functions agents spend time in, hottest first;
  2. with the agent binary dropped from the page cache and the read-ahead of its disk set to 0
     (restored after), recording every user page fault: each page of agent code that any agent
     ran faults once, so every function on such a page is one an agent may run.
The order is (1) then the rest of (2). Names no longer in the binary are ignored by the
linker, so a stale order costs memory, never correctness; regenerate after dependency updates.

Needs root, perf and a release build:
    cargo build --release -p stratus --bins && sudo scripts/agent-symbol-order.py
then build again (a new list relinks the agent) and measure. Run it once, from a binary laid
out by the list in the repository: step (2) takes every function on a page an agent touched,
so from a layout that no longer fits the binary the list grows with cold neighbours, and a
list made from that layout grows again (2026-12-05: 8,181 names and 9.0 MiB per agent from
the committed list; 13,440 names and 10.5 MiB after two more runs).
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_deployment(bin_dir, state, servers, idle):
    """A shell command: launch hello with `servers` app servers, idle, terminate, shut down."""
    stratus = os.path.join(bin_dir, "stratus")
    toml = os.path.join(state, "bench.toml")
    text = open(os.path.join(ROOT, "examples/hello/deployment.toml")).read()
    for rel in ("../../plugins/hello-proxy", "../../plugins/hello"):
        text = text.replace(f'"{rel}"', '"' + os.path.join(ROOT, rel[6:]) + '"')
    text = text.replace('"datasource.sql"', '"' + os.path.join(ROOT, "examples/hello/datasource.sql") + '"')
    text = text.replace("min = 2\nmax = 4", f"min = {servers}\nmax = {servers}")
    open(toml, "w").write(text)
    env = f"STRATUS_STATE_DIR={state}"
    return (f"set -e; {env} {stratus} launch {toml} >/dev/null; sleep {idle}; "
            f"{env} {stratus} terminate hello >/dev/null; {env} {stratus} shutdown >/dev/null")


def perf(args, command):
    subprocess.run(["perf", "record", "-q", *args, "-a", "--", "sh", "-c", command],
                   check=True, stderr=subprocess.DEVNULL)


def perf_script(data, *fields):
    return subprocess.run(["perf", "script", "-i", data, "--no-demangle", *fields],
                          capture_output=True, text=True, check=True).stdout


def hot_functions(data, agent):
    """Functions of the agent binary by samples, most first."""
    counts = collections.Counter()
    for line in perf_script(data, "-F", "ip,sym,dso").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == f"({agent})" and not parts[1].startswith("["):
            counts[parts[1]] += 1
    return [name for name, _ in counts.most_common()]


def functions_on_faulted_pages(data, agent):
    """Every function of the agent binary that shares a page with code an agent faulted on."""
    segments = []
    for line in subprocess.run(["readelf", "-lW", agent], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        p = line.split()
        if p and p[0] == "LOAD":
            segments.append((int(p[1], 16), int(p[2], 16), int(p[4], 16)))
    symbols = []
    for line in subprocess.run(["nm", "-S", agent], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tT":
            symbols.append((int(p[0], 16), int(p[1], 16), p[3]))
    symbols.sort()
    maps = collections.defaultdict(list)
    pages = set()
    mmap = re.compile(r" (\d+)/\d+: \[0x([0-9a-f]+)\((0x[0-9a-f]+)\) @ (0x[0-9a-f]+|\d+) [^\]]*\]: (\S+) (\S+)$")
    fault = re.compile(r"(?:^|\s)(\d+)\s+address=0x([0-9a-f]+) ip=0x[0-9a-f]+ error_code=0x[0-9a-f]+")
    for line in perf_script(data, "--show-mmap-events", "-F", "pid,trace").splitlines():
        m = mmap.search(line)
        if m:
            if m.group(6) == agent and "x" in m.group(5):
                start = int(m.group(2), 16)
                maps[m.group(1)].append((start, start + int(m.group(3), 16), int(m.group(4), 0)))
            continue
        m = fault.search(line)
        if not m:
            continue
        address = int(m.group(2), 16)
        for start, end, offset in maps.get(m.group(1), ()):
            if start <= address < end:
                file_offset = address - start + offset
                for seg_offset, seg_addr, seg_size in segments:
                    if seg_offset <= file_offset < seg_offset + seg_size:
                        pages.add((file_offset - seg_offset + seg_addr) >> 12)
                break
    names = []
    for address, size, name in symbols:
        if any(page in pages for page in range(address >> 12, ((address + max(size, 1) - 1) >> 12) + 1)):
            names.append(name)
    return names


def block_device_of(path):
    dev = os.stat(path).st_dev
    name = os.path.basename(os.path.realpath(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"))
    # A partition's read-ahead is its disk's.
    parent = os.path.realpath(f"/sys/class/block/{name}/..")
    if os.path.exists(os.path.join(parent, "queue/read_ahead_kb")):
        return os.path.join(parent, "queue/read_ahead_kb")
    return f"/sys/class/block/{name}/queue/read_ahead_kb"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--idle", type=int, default=25, help="seconds the deployment idles")
    parser.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (the local provider, perf -a, the disk's read-ahead)")
    agent = os.path.realpath(os.path.join(args.bin, "stratus-agent"))
    with tempfile.TemporaryDirectory(prefix="stratus-order-") as tmp:
        # Program users must reach the servers' directories through it.
        os.chmod(tmp, 0o755)
        state = os.path.join(tmp, "state")
        os.mkdir(state)
        command = run_deployment(args.bin, state, args.servers, args.idle)
        samples = os.path.join(tmp, "samples.data")
        perf(["-e", "cpu-clock:u", "-F", "20000", "-o", samples], command)
        hot = hot_functions(samples, agent)
        if not hot:
            sys.exit(f"no samples in {agent}: did the agents run it?")

        faults = os.path.join(tmp, "faults.data")
        read_ahead = block_device_of(agent)
        before = open(read_ahead).read().strip()
        # Said first, so that a run killed before `finally` leaves the way back on the screen.
        print(f"{read_ahead}: 0 for the second run (restore with: echo {before} > {read_ahead})")
        try:
            open(read_ahead, "w").write("0")
            fd = os.open(agent, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            perf(["-e", "exceptions:page_fault_user", "-o", faults], command)
        finally:
            open(read_ahead, "w").write(before)
        covered = functions_on_faulted_pages(faults, agent)

    order, seen = [], set()
    for name in hot + covered:
        if name not in seen:
            seen.add(name)
            order.append(name)
    out = os.path.join(ROOT, "src/bin/stratus-agent.order")
    open(out, "w").write("\n".join(order) + "\n")
    print(f"{out}: {len(hot)} sampled functions, {len(order)} in all")


if __name__ == "__main__":
    main()
