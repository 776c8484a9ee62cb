"""`slimvl demo`: answer a few synthetic questions with `builtin:tiny`, show what each stage of a request
costs, and measure each recipe's accuracy on the test split.

Without the trained `builtin:tiny` (a checkout whose model was removed), the demo runs a small random
checkpoint: every stage runs and is timed as for a real model, but the answers are meaningless and no
accuracy is shown. Recipes whose optimizations are not built yet are reported as such, never with
made-up numbers.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from slimvl.api import NotBuiltError, load
from slimvl.data import VQAExample, examples
from slimvl.eval import evaluate, normalize_answer
from slimvl.models.checkpoint import write_random_checkpoint
from slimvl.models.loader import tiny_path
from slimvl.pipeline import Answer

DEFAULT_OUT = Path("out/demo")
RECIPES = ("none", "int8", "sparsify", "prune", "laptop")
N_QUESTIONS = 3
N_ACCURACY = 200  # test questions each recipe's accuracy is measured on (the trained model only)
MAX_NEW_TOKENS = 8


@dataclass
class Question:
    image_path: Path
    question: str
    expected: str


def run_demo(
    out_dir: str | Path | None = None, console: Console | None = None, accuracy_n: int = N_ACCURACY
) -> int:
    """Run the demo, writing its images under `out_dir` (default `out/demo`) and measuring each recipe's
    accuracy on `accuracy_n` test questions; returns the exit code."""
    console = console or Console(highlight=False, emoji=False)
    questions = _write_questions(Path(out_dir) if out_dir is not None else DEFAULT_OUT)
    trained = (tiny_path() / "config.json").is_file()
    accuracy_questions = list(examples("test", accuracy_n)) if trained else []
    with tempfile.TemporaryDirectory(prefix="slimvl-demo-") as tmp:
        if trained:
            model_ref, model_name = "builtin:tiny", "builtin:tiny"
        else:
            model_ref, model_name = str(write_random_checkpoint(Path(tmp) / "random")), "random checkpoint"
            console.print(
                "[bold yellow]builtin:tiny is not shipped yet: this demo runs a small RANDOM (untrained) "
                "model, so its answers are meaningless; the stage timings are real.[/]"
            )
        rows = [
            _run_recipe(model_ref, model_name, recipe, questions, accuracy_questions, console)
            for recipe in RECIPES
        ]
    console.print(_summary_table(rows, model_name, len(accuracy_questions)))
    return 0


def _write_questions(out_dir: Path) -> list[Question]:
    out_dir.mkdir(parents=True, exist_ok=True)
    questions = []
    for i, example in enumerate(examples("test", N_QUESTIONS), start=1):
        path = out_dir / f"q{i}-seed{example.seed}.png"
        example.image.save(path)
        questions.append(Question(path, example.question, example.answer))
    return questions


def _run_recipe(
    model_ref: str,
    model_name: str,
    recipe: str,
    questions: list[Question],
    accuracy_questions: list[VQAExample],
    console: Console,
) -> list[str]:
    """Answer every question with `recipe` applied; return the recipe's summary row."""
    try:
        slim = load(model_ref, recipe)
    except NotBuiltError as exc:
        return [recipe, escape(f"not built: {exc}"), "", "", ""]
    console.rule(f"{model_name} · recipe {recipe}")
    answers: list[Answer] = []
    for q in questions:
        answer = slim.generate([q.image_path], q.question, max_new_tokens=MAX_NEW_TOKENS)
        answers.append(answer)
        is_right = normalize_answer(answer.text) == q.expected
        stages = " · ".join(f"{name} {ms:.0f} ms" for name, ms in answer.metrics.stages_ms.items())
        console.print(f"image:    {escape(str(q.image_path))}")
        console.print(f"question: {escape(q.question)}")
        console.print(f"answer:   {escape(repr(answer.text))}")
        console.print(
            f"expected: {escape(q.expected)} -> {'[green]right[/]' if is_right else '[red]wrong[/]'}"
        )
        console.print(f"stages:   {stages}\n")
    accuracy = "- (random model)"
    if accuracy_questions:
        result = evaluate(slim, questions=accuracy_questions)
        low, high = result.ci95
        accuracy = f"{result.accuracy:.1%} ({low:.1%}–{high:.1%})"
    rates = [a.metrics.decode_tok_s for a in answers if a.metrics.decode_tok_s is not None]
    return [
        recipe,
        accuracy,
        f"{sum(a.metrics.ttft_ms for a in answers) / len(answers):.0f}",
        f"{sum(rates) / len(rates):.1f}" if rates else "-",
        f"{max(a.metrics.peak_rss_bytes for a in answers) / 1e6:.0f}",
    ]


def _summary_table(rows: list[list[str]], model_name: str, accuracy_n: int) -> Table:
    table = Table(
        title=f"{model_name}: accuracy on {accuracy_n} test questions, timing of the {N_QUESTIONS} above"
    )
    for column in ("recipe", "accuracy (95% CI)", "mean TTFT ms", "decode tok/s", "peak RSS MB"):
        table.add_column(column, justify="left" if column.startswith(("recipe", "accuracy")) else "right")
    for row in rows:
        table.add_row(*row)
    return table
