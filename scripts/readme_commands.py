"""The commands of README.md's code blocks: listed, or run on builtin models.

    python scripts/readme_commands.py list              # each `slimvl ...` / `make ...` line of the shell blocks
    python scripts/readme_commands.py run [--quick]     # run them (what scripts/check_readme_commands.sh does)

`run` executes every `slimvl` command of the README's shell blocks, then its Python blocks, in order.
Commands on the builtins run as written. What stands for the user's own files is replaced: a checkpoint
directory by a builtin (`builtin:2b-shape`, or `builtin:tiny` with `--quick`), images by generated
pictures, output files and directories by paths in a temporary directory. `--quick` skips the commands
that name a `builtin:*-shape` model (minutes each). `make` lines are listed, not run: `make test` runs
the test suite and `make demo` is checked by hand or with `--make`.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHELL_LANGS = {"", "sh", "bash", "shell", "console"}
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*\n(?P<body>.*?)^```\s*$", re.S | re.M)
# options whose value is a file or directory the command writes
OUTPUT_OPTIONS = {"-o", "--output", "--json-out", "--md-out", "--plot", "--out"}
MODEL_COMMANDS = {
    "optimize",
    "run",
    "eval",
    "bench",
    "info",
    "serve",
    "export",
}  # their first positional is the MODEL
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def code_blocks(text: str, langs: set[str]) -> list[str]:
    return [m["body"] for m in _FENCE.finditer(text) if m["lang"].lower() in langs]


def shell_lines(text: str) -> list[str]:
    """Every command line of the shell blocks: comments dropped, `\\` continuations joined."""
    lines = []
    for block in code_blocks(text, SHELL_LANGS):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            words = shlex.split(line, comments=True)
            if words:
                lines.append(shlex.join(words))
    return lines


def slimvl_commands(text: str) -> list[list[str]]:
    """The argv (after `slimvl`) of every `slimvl ...` line of the shell blocks."""
    return [shlex.split(line)[1:] for line in shell_lines(text) if shlex.split(line)[0] == "slimvl"]


def python_blocks(text: str) -> list[str]:
    return code_blocks(text, {"python", "py"})


def is_builtin(ref: str) -> bool:
    return ref.startswith("builtin:")


class Substitutions:
    """Stand-ins for the user's files: a builtin for a checkpoint, generated images, outputs in `work`."""

    def __init__(self, work: Path, checkpoint: str):
        self.work, self.checkpoint = work, checkpoint
        self.written: dict[str, str] = {}  # an output path as the README writes it -> where it goes here

    def _key(self, value: str) -> str:
        return value.rstrip("/")

    def image(self, value: str) -> str:
        path = self.work / "images" / Path(value).name
        if not path.exists():
            from PIL import Image, ImageDraw

            path.parent.mkdir(parents=True, exist_ok=True)
            picture = Image.new("RGB", (448, 448), "white")
            ImageDraw.Draw(picture).ellipse((120, 140, 300, 320), fill="red")
            picture.save(path)
        return str(path)

    def output(self, value: str, prefix: str = "") -> str:
        target = str(self.work / "out" / (prefix + self._key(value).replace("/", "_")))
        self.written[self._key(value)] = target
        return target

    def model(self, value: str) -> str:
        if is_builtin(value) or (ROOT / value).exists():
            return value
        return self.written.get(self._key(value), self.checkpoint)

    def recipe(self, value: str) -> str:
        return self.written.get(self._key(value), value)

    def argv(self, argv: list[str]) -> list[str]:
        out, i = [], 0
        while i < len(argv):
            word = argv[i]
            value = argv[i + 1] if i + 1 < len(argv) else None
            if word in OUTPUT_OPTIONS and value is not None:
                out += [word, self.output(value)]
                i += 2
            elif word == "--image" and value is not None:
                out += [word, self.image(value)]
                i += 2
            elif word == "--recipe" and value is not None:
                out += [word, self.recipe(value)]
                i += 2
            elif i == 1 and argv[0] in MODEL_COMMANDS and not word.startswith("-"):  # the MODEL
                out.append(self.model(word))
                i += 1
            else:
                out.append(word)
                i += 1
        return out

    def python(self, source: str) -> str:
        def replace(match: re.Match[str]) -> str:
            value = match[1]
            if value.lower().endswith(IMAGE_SUFFIXES):
                return repr(self.image(value))
            if self._key(value) in self.written:
                return repr(self.written[self._key(value)])
            if value.endswith("/"):  # a directory: an optimized one if written above, else a checkpoint
                return repr(self.checkpoint)
            return match[0]

        # the output directory of optimize(model, recipe, out_dir) is written before it is read
        for match in re.finditer(r"optimize\(\s*\"[^\"]*\",\s*\"[^\"]*\",\s*\"([^\"]+)\"", source):
            self.output(match[1], prefix="python-")
        return re.sub(r"\"([^\"]+)\"", replace, source)


def serve_check(command: list[str]) -> subprocess.CompletedProcess:
    """Start a `slimvl serve` command, ask it one chat question once it is up, and stop it: exit 0 if
    the answer came."""
    import json
    import urllib.request

    port = command[command.index("--port") + 1] if "--port" in command else "8000"
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(command, cwd=ROOT)
    code = 1
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        body = json.dumps({"messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 4}).encode()
        request = urllib.request.Request(
            f"{base}/v1/chat/completions", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=900) as response:
            answer = json.loads(response.read())
        print(f"served answer: {answer['choices'][0]['message']['content']!r}")
        code = 0
    except OSError as exc:
        print(f"serve check failed: {exc}")
    finally:
        server.terminate()
        server.wait(timeout=60)
    return subprocess.CompletedProcess(command, code)


def run(quick: bool, with_make: bool) -> int:
    text = README.read_text()
    slimvl = os.environ.get("SLIMVL", str(ROOT / ".venv/bin/slimvl"))
    python = os.environ.get("PYTHON", sys.executable)
    failures, ran, skipped = [], 0, []
    with tempfile.TemporaryDirectory(prefix="slimvl-readme-") as tmp:
        subs = Substitutions(Path(tmp), "builtin:tiny" if quick else "builtin:2b-shape")
        jobs: list[tuple[str, list[str]]] = []
        for line in shell_lines(text):
            words = shlex.split(line)
            if words[0] == "make":
                if with_make:
                    jobs.append((line, words))
                else:
                    skipped.append(f"{line}  (make: run with --make)")
                continue
            if words[0] != "slimvl":
                skipped.append(f"{line}  (not a slimvl command)")
                continue
            argv = subs.argv(words[1:])
            if quick and any(re.fullmatch(r"builtin:\w+-shape", w) for w in argv):
                skipped.append(f"{line}  (--quick: a builtin:*-shape model)")
                continue
            jobs.append((line, [slimvl, *argv]))
        for i, source in enumerate(python_blocks(text), start=1):
            script = Path(tmp) / f"readme_python_{i}.py"
            script.write_text(subs.python(source))
            jobs.append((f"README Python block {i}", [python, str(script)]))
        for line, command in jobs:
            print(f"$ {shlex.join(command)}", flush=True)
            start = time.perf_counter()
            done = serve_check(command) if command[1:2] == ["serve"] else subprocess.run(command, cwd=ROOT)
            seconds = time.perf_counter() - start
            ran += 1
            status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
            print(f"-> {status} in {seconds:.0f} s: {line}\n", flush=True)
            if done.returncode != 0:
                failures.append(line)
    for line in skipped:
        print(f"skipped: {line}")
    print(f"{ran - len(failures)} of {ran} README commands ran; {len(skipped)} skipped")
    for line in failures:
        print(f"failed: {line}")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=("list", "run"))
    parser.add_argument(
        "--quick", action="store_true", help="skip builtin:*-shape commands; checkpoint -> builtin:tiny"
    )
    parser.add_argument("--make", action="store_true", help="also run the README's make lines")
    args = parser.parse_args(argv)
    if args.action == "list":
        print("\n".join(shell_lines(README.read_text())))
        return 0
    return run(args.quick, args.make)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
