"""Student notebooks are generated from the instructor's solution notebooks, the single source.

In a solution's code cell, the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` (inclusive) become ``...``
at the same indentation; the ``# TODO:`` and ``# HINT:`` comments written above the block stay, so the student
sees the task and the hint. Cells tagged ``answer`` (the instructor's answers to the questions) are left out.
Outputs and execution counts are cleared.

    python -m workshop_lib.teaching            # regenerate notebooks/NN_*.ipynb from notebooks/solutions/
    python -m workshop_lib.teaching --check    # exit 1 if a student notebook is out of date
"""

import argparse
import copy
import sys
from pathlib import Path

import nbformat

from .io import atomic_file

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def strip_solution(source: str, where: str = "") -> str:
    """Replace each marked solution block by ``...``; unbalanced markers are an error naming the cell."""
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{where}: nested '{BEGIN}'")
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + "...")
        elif stripped == END:
            if not inside:
                raise ValueError(f"{where}: '{END}' without '{BEGIN}'")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '{BEGIN}' is never closed")
    return "\n".join(out)


ANSWER_TAG = "answer"


def student_version(solution: nbformat.NotebookNode, name: str = "") -> nbformat.NotebookNode:
    student = copy.deepcopy(solution)
    student.cells = [c for c in student.cells if ANSWER_TAG not in c.get("metadata", {}).get("tags", [])]
    for index, cell in enumerate(student.cells):
        if cell.cell_type == "code":
            cell.source = strip_solution(cell.source, f"{name} cell {index}")
            cell.outputs = []
            cell.execution_count = None
        cell.get("metadata", {}).pop("execution", None)
    student.metadata["workshop"] = {"version": "student", "generated_from": f"solutions/{name}"}
    return student


def render(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def solutions(folder: Path = NOTEBOOKS) -> list[Path]:
    return sorted((folder / "solutions").glob("[0-9][0-9]_*.ipynb"))


def expected_student(solution_path: Path) -> str:
    return render(student_version(nbformat.read(solution_path, as_version=4), solution_path.name))


def regenerate(folder: Path = NOTEBOOKS) -> list[Path]:
    """Write every student notebook (atomically); returns the paths written."""
    written = []
    for solution in solutions(folder):
        target = folder / solution.name
        with atomic_file(target) as staging:
            staging.write_text(expected_student(solution))
        written.append(target)
    return written


def outdated(folder: Path = NOTEBOOKS) -> list[str]:
    """Names of student notebooks that are missing or differ from their generated version."""
    stale = []
    for solution in solutions(folder):
        target = folder / solution.name
        if not target.is_file() or target.read_text() != expected_student(solution):
            stale.append(solution.name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate student notebooks from the solutions.")
    parser.add_argument("--check", action="store_true", help="only report out-of-date student notebooks")
    parser.add_argument("--folder", type=Path, default=NOTEBOOKS)
    args = parser.parse_args(argv)
    if args.check:
        stale = outdated(args.folder)
        for name in stale:
            print(f"out of date: notebooks/{name} (run: python -m workshop_lib.teaching)")
        return 1 if stale else 0
    for path in regenerate(args.folder):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
