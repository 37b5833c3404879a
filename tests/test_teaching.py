import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workshop_lib import teaching

SOLUTION = """x = 1
# TODO: compute y
# HINT: double x
# BEGIN SOLUTION
y = 2 * x
# END SOLUTION
def f():
    # BEGIN SOLUTION
    return y
    # END SOLUTION
print(y)"""


def test_solution_blocks_become_ellipsis_and_hints_stay():
    assert teaching.strip_solution(SOLUTION) == (
        "x = 1\n# TODO: compute y\n# HINT: double x\n...\ndef f():\n    ...\nprint(y)")


@pytest.mark.parametrize("source, message", [("# BEGIN SOLUTION\nx", "never closed"),
                                             ("# END SOLUTION", "without"),
                                             ("# BEGIN SOLUTION\n# BEGIN SOLUTION", "nested")])
def test_unbalanced_markers_name_the_cell(source, message):
    with pytest.raises(ValueError, match=f"demo cell 3: .*{message}"):
        teaching.strip_solution(source, "demo cell 3")


def test_regenerate_and_check(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    notebook = new_notebook(cells=[new_code_cell("a = 1"), new_code_cell(SOLUTION)])
    notebook.cells[0].outputs = [nbformat.v4.new_output("stream", text="old")]
    nbformat.write(notebook, tmp_path / "solutions" / "01_demo.ipynb")
    assert teaching.main(["--check", "--folder", str(tmp_path)]) == 1
    assert "out of date: notebooks/01_demo.ipynb" in capsys.readouterr().out
    assert teaching.main(["--folder", str(tmp_path)]) == 0
    assert teaching.main(["--check", "--folder", str(tmp_path)]) == 0
    student = nbformat.read(tmp_path / "01_demo.ipynb", as_version=4)
    assert student.cells[0].outputs == [] and "2 * x" not in student.cells[1].source


def test_answers_are_left_out_of_student_versions():
    answer = nbformat.v4.new_markdown_cell("**Answer:** because.", metadata={"tags": ["answer"]})
    solution = new_notebook(cells=[nbformat.v4.new_markdown_cell("*Question:* why?"), answer])
    student = teaching.student_version(solution, "demo")
    assert [c.source for c in student.cells] == ["*Question:* why?"]
