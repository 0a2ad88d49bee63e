"""CPU instructions per request on the hot path, counted by valgrind: a noise-free measure.

Timings on a shared machine move by ±30% from one run to the next; the number of instructions
a request executes does not. For each case this script runs a child Python under
``valgrind --tool=callgrind`` twice, once handling ``--number`` messages and once handling
none, and divides the difference by ``--number``. The same is done for the bare handler's
parse-and-answer code (bench/bare_handler.py without its sockets), so the last column is a
ratio like the other benchmarks'. No sockets on either side: what is counted is the Python
work per request, not ZeroMQ's or the kernel's. Needs ``valgrind`` (``apt-get install
valgrind``); takes about 30 s per case.

    python bench/instructions.py
    python bench/instructions.py --cases hello-text,await-json --number 5000
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from benchlib import REPO, add_json_option, parse_cases, script_parser, write_json

HERE = Path(__file__).resolve().parent

#: The child: handles ``number`` copies of a case's message (awaiting ones inside a loop).
CHILD = """
import asyncio, sys
sys.path[:0] = [{bench!r}, {repo!r}]
from capacity import request_bytes
number, which, target, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].encode()
raws = [request_bytes(path, 100 + i) for i in range(100)]
if which == "bare":
    import tnetstring
    from bare_handler import answer, wants_close
    def handle(raw):
        sender, conn_id, path, rest = raw.split(b" ", 3)
        if path == b"@*":
            return
        headers, _ = tnetstring.pop(rest)
        sent.append(b"%s %d:%s, " % (sender, len(conn_id), conn_id) + answer(path))
        if wants_close(headers):
            sent.append(b"")
    sent = []
    for i in range(200 + number):
        handle(raws[i % 100])
        sent.clear()
else:
    from micro import load
    app = load(target)
    conn = app.msg_conn
    async def main():
        for rounds in (2, number // 100):
            for _ in range(rounds):
                expected = conn.sent + 100
                for raw in raws:
                    app.handle_message(raw)
                while conn.sent < expected:
                    await asyncio.sleep(0)
    asyncio.run(main())
"""


def count(which: str, target: str, path: str, number: int) -> int:
    """Instructions the child executes in total."""
    code = CHILD.format(bench=str(HERE), repo=str(REPO))
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    argv += [sys.executable, "-c", code, str(number), which, target, path]
    # A fixed hash seed: with a random one, dict and set layouts (so the instructions run to
    # probe them) change from run to run, by about 2%.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return int(found.group(1))


def per_request(which: str, target: str, path: str, number: int) -> int:
    return round((count(which, target, path, number) - count(which, target, path, 0)) / number)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--cases", default="hello-text,hello-user,json,param,await-json")
    parser.add_argument("--number", type=int, default=2000, help="messages counted (2000)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.number < 100 or args.number % 100:
        parser.error("--number must be a multiple of 100")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    try:
        cases = parse_cases(args.cases)
    except ValueError as exc:
        parser.error(str(exc))
    print("| case | bare instructions/req | brubeck instructions/req | bare ÷ brubeck |")
    print("|---|---:|---:|---:|")
    rows = {}
    for case in cases:
        bare = per_request("bare", case.app, case.at(), args.number)
        brubeck = per_request("brubeck", case.app, case.at(), args.number)
        rows[case.name] = {"bare": bare, "brubeck": brubeck, "ratio": round(bare / brubeck, 2)}
        print(f"| {case.name} | {bare} | {brubeck} | {bare / brubeck:.2f} |", flush=True)
    if args.json:
        write_json(args.json, {"number": args.number}, results=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
