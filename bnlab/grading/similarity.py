"""Flag submitted code that was pasted from the course's own library (``bnlab``), for the instructor to look at.

:func:`course_matches` parses a submission's code cells, takes every top-level function and class (a class with
its methods), normalizes their syntax trees and compares each with the normalized trees of the batch norm code a
learner could paste into exercises 1-4 (:data:`COURSE_MODULES`: the numpy forward, inference and backward passes,
the numpy layers, the torch ``autograd.Function`` and modules, the running-statistics and variance helpers). A
submission function is compared with the course's functions *and* methods (a pasted ``BatchNorm.forward`` used as
a free function); a submission class with the course's classes and, when it does not match as a whole, each of its
methods with the course's functions and methods (a pasted method inside an own class). A match is a flag for a
human, never a deduction. Nothing is imported or run: the course side is read from the installed source files.

Normalization (:func:`normalized_tokens`) turns a function or class into a flat sequence of strings, one per
syntax node, in source order:

* docstrings and other bare string statements are dropped; comments, formatting, line breaks and brackets never
  reach the syntax tree;
* every name *bound* inside the unit (arguments, assigned names, loop and ``with`` targets, local imports, nested
  functions) becomes a placeholder numbered by first appearance, so consistent renaming changes nothing; names the
  unit does not bind (``np``, ``torch``, ``reduction_axes``, ``range``) and attribute names (``.mean``,
  ``.running_var``) are kept, since they are what a copy shares with its original; method names are kept too;
* type annotations and return annotations are dropped (an annotated assignment is an assignment);
* keyword arguments of a call are sorted by keyword, so reordering them changes nothing;
* constants are normalized mildly: ints and floats by numeric value (``2`` = ``2.0``), every string is one token.

Similarity (:func:`similarity`) is difflib's ``SequenceMatcher.ratio`` (autojunk off) over the two sequences, 2 *
matched tokens / total length, in two passes: the first aligns the sequences with all placeholders made equal and
reads off which submission variable plays which course variable; the second renames the submission's placeholders
accordingly and takes the ratio. Numbering by first appearance alone would turn one inserted or removed variable
into a mismatch of every later name; the mapping keeps such an edit local, while inconsistent data flow still
counts as different. The ratio was chosen over n-gram Jaccard because it is *ordered* (two implementations of
batch norm share most of their vocabulary -- ``mean``, ``keepdims``, ``np.sqrt`` -- but not the order of a whole
function), it degrades gradually under small edits (a changed statement costs only its own tokens, where an
n-gram set loses n grams per changed token), and its length term keeps a short honest function from matching a
long course one. It is cheap enough here: ``real_quick_ratio`` and ``quick_ratio`` (upper bounds) skip most pairs,
and the course side is parsed, normalized and indexed once (:func:`course_units` caches it).

What it detects: a course function, method or class pasted whole, with renamed variables, stripped docstrings and
comments, reordered keyword arguments, reformatted, with annotations removed, or with a few statements changed.
What it cannot detect: a paraphrase written by hand from the course code (the same steps in other expressions or
another order), code taken from elsewhere (CS231n, d2l, a forum), or a copy so heavily edited that most of its
statements changed. Units shorter than :data:`MIN_TOKENS` are never compared: short code (``reduction_axes``, a
running-average update, ``eval`` returning ``self.train(False)``) is written the same way by everyone.

Calibration (measured with ``tests/test_grading_similarity.py``'s sources, checked there with a margin of 0.04):
every verbatim, renamed, stripped or reformatted copy of every course unit scores 1.0. Honest work -- the masters'
solution cells, the learner-style fixtures, the solved notebooks and independent implementations -- scores at most
0.86: exercise 2's staged backward follows the lecture's steps, names and order, and so matches
``bnlab.functional.batchnorm_backward`` everywhere but in the course's helper calls (0.856 for the master's solution,
0.861 for the same code unpacking its cache in the course's order). Everything else honest stays below 0.80.
:data:`DEFAULT_THRESHOLD` = 0.92 sits between. A copy with one statement replaced scores 0.80-0.99 (flagged for the
long units, not always for short ones such as the fused backward); a copy adapted by hand to run without the
course's helpers (``reduction_axes``, ``as_channel``, ``BatchNormCache`` inlined) scores 0.57-0.87, inside the
honest range, and is not flagged: there the honest and the copied ranges overlap, and no threshold separates them.
"""

from __future__ import annotations

import ast
import copy
import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["COURSE_MODULES", "DEFAULT_THRESHOLD", "MIN_TOKENS", "CourseMatch", "course_matches", "course_units",
           "normalized_tokens", "similarity"]

#: Library modules whose functions, classes and methods a learner could paste into exercises 1-4.
COURSE_MODULES: tuple[str, ...] = (
    "bnlab.functional",  # numpy forward, inference, staged and fused backward (exercises 1-2)
    "bnlab.layers",  # the numpy layer with running statistics (exercise 3)
    "bnlab.mistakes",  # LayerModel, a second numpy layer; the mistake models built from the same steps
    "bnlab.running_stats",  # the running-statistics update every layer uses (exercises 3-4)
    "bnlab.numerics",  # two-pass and one-pass variance (exercise 1)
    "bnlab.nn.functional",  # the torch autograd.Function and batch_norm (exercise 4)
    "bnlab.nn.modules",  # the torch modules (exercise 4)
    "bnlab.nn.ghost",  # ghost batch norm: a torch module built on the same Function
)

#: Scores at or above this flag a submission unit; calibrated in tests/test_grading_similarity.py (see above).
DEFAULT_THRESHOLD = 0.92

#: Units with fewer normalized tokens than this (on either side) are not compared: too short to tell apart.
MIN_TOKENS = 40

# Limits that keep any input cheap: larger cells are skipped, reading stops after MAX_TOTAL_CHARS, at most
# MAX_UNITS functions, classes and methods of a submission are compared, a unit over MAX_TOKENS is skipped.
MAX_CELL_CHARS = 100_000
MAX_TOTAL_CHARS = 1_000_000
MAX_UNITS = 200
MAX_TOKENS = 20_000


@dataclass(frozen=True)
class CourseMatch:
    """A submission function or class that looks pasted from the course library.

    Attributes:
        name: the submission's function or class name (``"batchnorm_forward"``, ``"BatchNorm"``).
        source: the dotted course object it matches, e.g. ``"bnlab.functional.batchnorm_forward"`` or
            ``"bnlab.layers.BatchNorm.forward"`` for a method.
        similarity: in [0, 1]; 1.0 means the same code up to names, docstrings, comments and layout.
    """

    name: str
    source: str
    similarity: float


# ------------------------------------------------------------------------------------------------ normalization

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_FUNCTION_KINDS = ("function", "method")  # what a submission function (or method) is compared with
_DEFINES = re.compile(r"^(?:async[ \t]+)?(?:def|class)[ \t]", re.MULTILINE)  # a cell with a top-level definition
_UNITS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_SKIPPED_FIELDS = frozenset({"ctx", "type_comment", "type_ignores", "annotation", "returns", "kind"})


def _is_docstring(statement: ast.stmt) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


def _method_ids(unit: ast.AST) -> set[int]:
    """ids of the functions and classes defined directly in a class body: their names are API and kept."""
    return {id(s) for s in unit.body if isinstance(s, _UNITS)} if isinstance(unit, ast.ClassDef) else set()


def _bound_names(unit: ast.AST) -> set[str]:
    """Names the unit binds anywhere inside it (arguments, assignments, imports, nested definitions, ...).

    Method names directly in a class body are not included: they are API (``forward``, ``backward``) and kept.
    """
    method_ids = _method_ids(unit)
    bound: set[str] = set()
    for node in ast.walk(unit):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, _UNITS) and node is not unit and id(node) not in method_ids:
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return bound


def _constant(value: object) -> str:
    if isinstance(value, bool) or value is None or value is Ellipsis:
        return f"const:{value!r}"
    if isinstance(value, (int, float)):
        try:
            return f"num:{float(value):.6g}"
        except OverflowError:
            return "num:big"
    if isinstance(value, complex):
        return "num:complex"
    return "str" if isinstance(value, str) else "bytes"


def normalized_tokens(unit: ast.AST) -> list[str]:
    """The normalized token sequence of a function or class definition (see the module docstring).

    Iterative (no recursion), so any depth the parser accepts is fine. Returns one string per syntax node, plus
    markers for operators, keyword names, attribute names and kept identifiers.
    """
    bound, method_ids = _bound_names(unit), _method_ids(unit)
    placeholders: dict[str, str] = {}

    def name(identifier: str) -> str:
        if identifier not in bound:
            return f"id:{identifier}"
        if identifier not in placeholders:
            placeholders[identifier] = f"${len(placeholders)}"
        return placeholders[identifier]

    tokens: list[str] = []
    stack: list[object] = [unit]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            tokens.append(item)
            continue
        node = item
        children: list[object] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kind = "class" if isinstance(node, ast.ClassDef) else "def"
            if node is unit:
                head = kind  # the unit's own name is the learner's choice
            elif id(node) in method_ids or node.name not in bound:
                head = f"{kind}:{node.name}"  # a method: its name is API
            else:
                head = f"{kind}:{name(node.name)}"  # a nested helper: a local name like any other
            tokens.append(head)
            children.extend(node.decorator_list)
            if isinstance(node, ast.ClassDef):
                children.extend(node.bases)
                children.extend(sorted(node.keywords, key=lambda k: k.arg or ""))
            else:
                children.append(node.args)
            body = list(node.body)
            children.extend(s for s in body if not _is_docstring(s))
        elif isinstance(node, ast.Expr) and _is_docstring(node):
            continue
        elif isinstance(node, ast.Name):
            tokens.append(name(node.id))
        elif isinstance(node, ast.arg):
            tokens.append(name(node.arg))
        elif isinstance(node, ast.Attribute):
            tokens.append(f".{node.attr}")
            children.append(node.value)
        elif isinstance(node, ast.Constant):
            tokens.append(_constant(node.value))
        elif isinstance(node, ast.keyword):
            tokens.append(f"kw:{node.arg}" if node.arg else "kw:**")
            children.append(node.value)
        elif isinstance(node, ast.Call):
            tokens.append("Call")
            children.append(node.func)
            children.extend(node.args)
            children.extend(sorted(node.keywords, key=lambda k: k.arg or ""))
        elif isinstance(node, ast.AnnAssign):
            if node.value is None:
                continue  # a bare annotation declares nothing at run time
            tokens.append("Assign")
            children.extend((node.target, node.value))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)):
            tokens.append(f"{type(node).__name__}:{type(node.op).__name__}")
            children.extend((node.left, node.right) if isinstance(node, ast.BinOp) else (node.target, node.value))
        elif isinstance(node, ast.UnaryOp):
            tokens.append(f"UnaryOp:{type(node.op).__name__}")
            children.append(node.operand)
        elif isinstance(node, ast.BoolOp):
            tokens.append(f"BoolOp:{type(node.op).__name__}")
            children.extend(node.values)
        elif isinstance(node, ast.Compare):
            tokens.append("Compare:" + ",".join(type(op).__name__ for op in node.ops))
            children.append(node.left)
            children.extend(node.comparators)
        elif isinstance(node, ast.alias):
            tokens.append(f"alias:{node.name}")
            if node.asname:
                tokens.append(name(node.asname))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            tokens.append(f"{type(node).__name__}:{getattr(node, 'module', '') or ''}")
            children.extend(node.names)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            tokens.append(type(node).__name__)
            tokens.extend(name(n) for n in node.names)
        elif isinstance(node, ast.ExceptHandler):
            tokens.append("except")
            if node.type is not None:
                children.append(node.type)
            if node.name:
                children.append(name(node.name))
            children.extend(node.body)
        elif isinstance(node, ast.AST):
            tokens.append(type(node).__name__)
            for field, value in ast.iter_fields(node):
                if field in _SKIPPED_FIELDS:
                    continue
                if isinstance(value, list):
                    children.extend(v for v in value if isinstance(v, ast.AST) and not
                                    (isinstance(v, ast.Expr) and _is_docstring(v)))
                elif isinstance(value, ast.AST):
                    children.append(value)
                elif isinstance(value, str) and field in ("name", "attr", "arg", "module"):
                    children.append(name(value) if value in bound else f"{field}:{value}")
        if len(tokens) > MAX_TOKENS:
            raise ValueError("unit too large to compare")
        stack.extend(reversed(children))
    return tokens


# ------------------------------------------------------------------------------------------------ course side


def _collapsed(tokens: list[str] | tuple[str, ...]) -> list[str]:
    """The tokens with every placeholder made the same ("$"): the shape of the code without its data flow."""
    return ["$" if t.startswith("$") else t for t in tokens]


@dataclass(frozen=True)
class _CourseUnit:
    source: str  # dotted name
    kind: str  # "function", "method" or "class"
    tokens: tuple[str, ...]
    shape: difflib.SequenceMatcher  # indexed on the collapsed tokens (second sequence)
    full: difflib.SequenceMatcher  # indexed on the tokens themselves (second sequence)


def _module_path(module: str) -> Path | None:
    """The installed source file of a course module, found without importing it (bnlab.nn would import torch)."""
    package = Path(__file__).resolve().parents[1]  # the installed bnlab/ that holds this file
    path = package.joinpath(*module.split(".")[1:]).with_suffix(".py")
    return path if path.is_file() else None


def _definitions(module: str, tree: ast.Module) -> Iterator[tuple[str, str, ast.AST]]:
    for node in tree.body:
        if isinstance(node, _FUNCTIONS):
            yield f"{module}.{node.name}", "function", node
        elif isinstance(node, ast.ClassDef):
            yield f"{module}.{node.name}", "class", node
            for member in node.body:
                if isinstance(member, _FUNCTIONS):
                    yield f"{module}.{node.name}.{member.name}", "method", member


@lru_cache(maxsize=1)
def course_units() -> tuple[_CourseUnit, ...]:
    """Every function, class and method of :data:`COURSE_MODULES` with at least :data:`MIN_TOKENS` tokens.

    Read once from the installed source files with :mod:`ast` (nothing is imported) and cached.
    """
    units = []
    for module in COURSE_MODULES:
        path = _module_path(module)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) if path else None
        except (OSError, SyntaxError, ValueError):
            tree = None  # a module that cannot be read is left out, the others still count
        for source, kind, node in _definitions(module, tree) if tree else ():
            try:
                tokens = normalized_tokens(node)
            except ValueError:
                continue
            if len(tokens) >= MIN_TOKENS:
                units.append(_CourseUnit(source, kind, tuple(tokens), _indexed(_collapsed(tokens)),
                                         _indexed(tokens)))
    return tuple(units)


def _indexed(tokens: list[str]) -> difflib.SequenceMatcher:
    """A matcher with ``tokens`` as its second sequence, its index and token counts built once.

    :func:`similarity` works on shallow copies, which share the index read-only: grading threads can compare
    against the same course unit at once.
    """
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(tokens)
    matcher.set_seq1([])
    matcher.quick_ratio()  # builds fullbcount, the counts of the second sequence, now rather than per copy
    return matcher


def _placeholder_map(tokens: list[str], course: tuple[str, ...], blocks: Iterable[tuple[int, int, int]]
                     ) -> dict[str, str]:
    """A one-to-one map of the submission's placeholders onto the course unit's, from an alignment.

    Each aligned pair of placeholders is a vote; pairs are taken greedily, most votes first.
    """
    votes: dict[tuple[str, str], int] = {}
    for i, j, size in blocks:
        for k in range(size):
            a, b = tokens[i + k], course[j + k]
            if a.startswith("$"):
                votes[a, b] = votes.get((a, b), 0) + 1
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for (a, b), _ in sorted(votes.items(), key=lambda item: (-item[1], item[0])):
        if a not in mapping and b not in taken:
            mapping[a] = b
            taken.add(b)
    return mapping


def similarity(tokens: list[str], unit: _CourseUnit, at_least: float = 0.0) -> float:
    """How much of a submission unit's normalized tokens and a course unit's coincide, in [0, 1].

    Two passes of ``SequenceMatcher``: the first aligns the sequences with every placeholder made equal and
    reads off which submission variable plays which course variable (:func:`_placeholder_map`); the second
    renames the submission's placeholders accordingly and returns ``ratio()`` against the course's tokens. So
    numbering by first appearance does not turn one inserted or deleted variable into a mismatch of every
    later name, while names that are used inconsistently still count as different. Returns 0.0 early when a
    cheap upper bound (length ratio, then bag of tokens) is already below ``at_least``.
    """
    shape = copy.copy(unit.shape)
    shape.set_seq1(_collapsed(tokens))
    if shape.real_quick_ratio() < at_least or shape.quick_ratio() < at_least:
        return 0.0
    mapping = _placeholder_map(tokens, unit.tokens, shape.get_matching_blocks())
    full = copy.copy(unit.full)
    full.set_seq1([mapping.get(t, "$?" + t) if t.startswith("$") else t for t in tokens])
    return full.ratio()


# ------------------------------------------------------------------------------------------------ submission side


def _clean(cell: str) -> str:
    """IPython-only lines become ``pass`` (same indentation); a leading cell magic line is dropped."""
    lines = cell.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        lines = lines[1:]
    out = []
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")) or (stripped.endswith("?") and not stripped.startswith("#")):
            line = line[: len(line) - len(stripped)] + "pass"
        out.append(line)
    return "\n".join(out)


def _parse(cell: str) -> ast.Module | None:
    for text in (cell, _clean(cell)):
        try:
            return ast.parse(text)
        except Exception:  # noqa: BLE001 -- SyntaxError, ValueError (NUL bytes), MemoryError, RecursionError, ...
            continue
    return None


def _submission_units(cells: Iterable[str]) -> Iterator[tuple[str, str, ast.AST]]:
    """(name, kind, node) of each top-level function ("function") and class ("class") of the parsable cells."""
    total = 0
    for cell in cells:
        if not isinstance(cell, str) or len(cell) > MAX_CELL_CHARS:
            continue
        total += len(cell)
        if total > MAX_TOTAL_CHARS:
            return
        if not _DEFINES.search(cell):
            continue  # nothing to compare: do not spend a parse on it
        tree = _parse(cell)
        if tree is None:
            continue
        for node in tree.body:
            if isinstance(node, _FUNCTIONS):
                yield node.name, "function", node
            elif isinstance(node, ast.ClassDef):
                yield node.name, "class", node


def _best_match(name: str, node: ast.AST, kinds: tuple[str, ...], threshold: float) -> CourseMatch | None:
    """The course unit of one of ``kinds`` most similar to ``node``, if it scores at least ``threshold``."""
    try:
        tokens = normalized_tokens(node)
    except (ValueError, RecursionError, MemoryError):
        return None
    if len(tokens) < MIN_TOKENS:
        return None
    top: CourseMatch | None = None
    for unit in course_units():
        if unit.kind in kinds:
            score = similarity(tokens, unit, at_least=max(threshold, top.similarity if top else 0.0))
            if score >= threshold and (top is None or score > top.similarity):
                top = CourseMatch(name, unit.source, round(score, 4))
    return top


def course_matches(code: str | list[str], threshold: float = DEFAULT_THRESHOLD) -> list[CourseMatch]:
    """Submission functions and classes that look pasted from the course library, most similar first.

    Args:
        code: the submission's code, one string or a list of cell sources (a notebook's code cells in order).
            Cells that do not parse, even after IPython magics are blanked out, are skipped; so are cells over
            :data:`MAX_CELL_CHARS` characters, and everything past :data:`MAX_TOTAL_CHARS` in all.
        threshold: the similarity in [0, 1] at and above which a unit is reported. The default,
            :data:`DEFAULT_THRESHOLD`, is calibrated to stay clear of every honest solution in the tests.

    Returns:
        A list of :class:`CourseMatch`, sorted by decreasing similarity, one per submission function or class
        whose best course match scores at least ``threshold``: its name, the dotted course object and the score.
        A top-level function is compared with course functions and methods; a class with course classes, and
        when the class as a whole does not match, each of its methods with course functions and methods (then
        ``name`` is ``"Class.method"``). A name defined twice (a cell run again) is reported once, with its
        higher score. Units shorter than :data:`MIN_TOKENS` normalized tokens are never reported. Never
        raises: input that cannot be read (not code, not parsable, too large or too deep) gives ``[]``.
    """
    try:
        cells = [code] if isinstance(code, str) else list(code)
        threshold = float(threshold)
        best: dict[str, CourseMatch] = {}
        budget = MAX_UNITS
        for name, kind, node in _submission_units(cells):
            if kind == "function":
                found = [_best_match(name, node, _FUNCTION_KINDS, threshold)]
                budget -= 1
            else:
                found = [_best_match(name, node, ("class",), threshold)]
                if found[0] is None:  # the class as a whole does not match: a pasted method still may
                    methods = [member for member in node.body if isinstance(member, _FUNCTIONS)]
                    found = [_best_match(f"{name}.{method.name}", method, _FUNCTION_KINDS, threshold)
                             for method in methods[:budget]]
                    budget -= len(methods)
                budget -= 1
            for match in found:
                if match is not None and (match.name not in best or match.similarity > best[match.name].similarity):
                    best[match.name] = match
            if budget <= 0:
                break
        return sorted(best.values(), key=lambda m: (-m.similarity, m.name))
    except Exception:  # noqa: BLE001 -- a flag for a human must never break grading
        return []
