"""House rules of include/ that a reviewer would otherwise check by hand: no function over
60 lines, no cryptic module aliases, one definition of each shared constant."""

from __future__ import annotations

import ast
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[2] / "include"
MAX_FUNCTION_LINES = 60


def _modules():
    for path in sorted(INCLUDE.rglob("*.py")):
        yield path.relative_to(INCLUDE / "extractor").as_posix(), ast.parse(path.read_text())


def test_no_function_over_60_lines():
    long = [(name, node.name, node.end_lineno - node.lineno + 1)
            for name, tree in _modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_module_aliases_say_what_they_are():
    """``import x as P`` / ``cfgmod``: a reader has to look the alias up. Allowed: the
    aliases every Python reader knows (torch.nn.functional as F is not among them here)."""
    cryptic = [(name, alias.asname) for name, tree in _modules() for node in ast.walk(tree)
               if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names
               if alias.asname and (len(alias.asname) == 1 or alias.asname.endswith("mod"))
               and not (name.startswith("engine/") and alias.asname == "F")]
    assert cryptic == []


def test_min_box_score_is_defined_once():
    definitions = [name for name, tree in _modules() for node in ast.walk(tree)
                   if isinstance(node, ast.Assign)
                   and any(isinstance(t, ast.Name) and t.id == "MIN_BOX_SCORE" for t in node.targets)]
    assert definitions == ["ocr/layout.py"]
