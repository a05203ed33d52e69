#!/usr/bin/env python3
"""The architecture checks of issue 19, as a report: module circles inside each crate (a module
that uses another that uses it back, through `crate::` or `super::` paths), and library
functions longer than a limit (default 80 lines; tests, benches and `#[cfg(test)]` modules
left out). A long function whose comments above it hold a line starting `Long:` (the reason
it is one piece) is listed apart. Exits 1 when there is a circle.

    python3 scripts/architecture.py [--limit N] [crates]
"""
import os
import re
import sys


def modules(src):
    mods = {}
    for dp, _, fs in os.walk(src):
        for f in fs:
            if not f.endswith(".rs"):
                continue
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, src)[:-3].replace(os.sep, "::")
            if rel.endswith("::mod"):
                rel = rel[:-5]
            if rel in ("lib", "main"):
                rel = ""
            text = open(p).read()
            mods[rel] = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    return mods


def circles(mods):
    deps = {m: set() for m in mods}
    for m, text in mods.items():
        for hit in re.findall(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
            parts = hit.split("::")
            for k in range(len(parts), 0, -1):
                cand = "::".join(parts[:k])
                if cand in mods:
                    if cand != m and not m.startswith(cand + "::"):
                        deps[m].add(cand)
                    break
        for hit in re.findall(r"super::([a-z_][a-z0-9_]*)", text):
            parent = "::".join(m.split("::")[:-1])
            cand = f"{parent}::{hit}" if parent else hit
            if cand in mods and cand != m:
                deps[m].add(cand)
    index, low, stack, on, found, n = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            c = []
            while True:
                w = stack.pop()
                on.discard(w)
                c.append(w)
                if w == v:
                    break
            if len(c) > 1:
                found.append(sorted(c))

    sys.setrecursionlimit(10000)
    for v in mods:
        if v not in index:
            strong(v)
    return found


FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+([a-zA-Z0-9_]+)")


def code(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//")[0]


def long_functions(path, limit):
    lines = open(path).read().split("\n")
    for i, l in enumerate(lines):
        if l.startswith("#[cfg(test)]"):
            lines = lines[:i]
            break
    out = []
    for i, l in enumerate(lines):
        m = FN.match(l)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            s = code(lines[j])
            if not started and ";" in s and "{" not in s:
                break
            depth += s.count("{") - s.count("}")
            started |= "{" in s
            if started and depth <= 0:
                break
            j += 1
        if started and j - i + 1 > limit:
            out.append((j - i + 1, f"{path}:{i + 1}", m.group(6), reason(lines, i)))
    return out


def reason(lines, i):
    """The `Long:` reason in the comments and attributes just above line `i`, if any."""
    k = i - 1
    while k >= 0 and lines[k].strip().startswith(("//", "#[")):
        text = lines[k].strip().lstrip("/!").strip()
        if text.startswith("Long:"):
            return text
        k -= 1
    return None


def main():
    args = sys.argv[1:]
    limit = 80
    if args[:1] == ["--limit"]:
        limit, args = int(args[1]), args[2:]
    root = args[0] if args else "crates"
    bad = False
    long = []
    for crate in sorted(os.listdir(root)):
        src = os.path.join(root, crate, "src")
        if not os.path.isdir(src):
            continue
        for c in circles(modules(src)):
            bad = True
            print(f"circle in {crate}: {' <-> '.join(c)}")
        for dp, _, fs in sorted(os.walk(src)):
            for f in sorted(fs):
                if f.endswith(".rs"):
                    long += long_functions(os.path.join(dp, f), limit)
    plain = [x for x in long if not x[3]]
    for n, where, name, _ in sorted(plain, reverse=True):
        print(f"{n:4d} lines  {name}  {where}")
    reasoned = [x for x in long if x[3]]
    if reasoned:
        print("with a reason:")
        for n, where, name, why in sorted(reasoned, reverse=True):
            print(f"{n:4d} lines  {name}  {where}  ({why})")
    print(f"{len(plain)} functions over {limit} lines without a reason, {len(reasoned)} with one; "
          f"{'module circles found' if bad else 'no module circles'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
