"""Fingerprints of Python code that depend on the code only: the same on every interpreter (3.10-3.13 checked) for
the same source, blind to comments, formatting, docstrings and the messages of raised errors, and narrow enough that
a definition added beside others leaves their fingerprints as they were.

A module is read as a list of *units*, its top-level statements (a decorated definition with its decorators). A
unit's digest hashes its token stream (``tokenize``, whose tokens are the language's, not an interpreter's syntax
tree: ``ast.dump`` changes text between Python versions) without comments, line breaks inside brackets, indentation
width, docstrings and raised errors' arguments. The names a unit reads are resolved to the units that bind them, in
its own module or, through its imports, in other modules of the packages followed, so the fingerprint of a
definition covers exactly what it reaches (:meth:`CodeBase.closure`).

No dependency beyond the standard library: caches in the data layer and the plan layer's run identity both use it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import io
import marshal
import tokenize
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

FORMAT = "tokens-1"  # the digest's own version: part of every fingerprint, changed only with this module's rules

_STRING_PARTS = {"FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END", "TSTRING_START", "TSTRING_MIDDLE",
                 "TSTRING_END"}  # Python >= 3.12 splits f-strings (3.14 t-strings) into these; older ones do not
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Unit:
    """One top-level statement of a module."""

    binds: frozenset[str]  # the module-level names it binds
    digest: str
    reads: frozenset[str]  # names it reads
    attributes: frozenset[tuple[str, str]]  # ``name.attribute`` it reads
    imports: tuple[tuple[str, str, str | None], ...]  # (alias, module, name or None for the module itself)
    nested: tuple[tuple[str, str, str | None], ...] = ()  # the same, of the imports inside its body

    @property
    def key(self) -> str:
        """What names it wherever it lives: the names it binds (a statement binding none: '(statement)')."""
        return ",".join(sorted(self.binds)) or "(statement)"


def _char_col(lines: list[str], line: int, byte_col: int) -> int:
    """ast's column offsets count UTF-8 bytes; tokenize's count characters."""
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return len(text.encode()[:byte_col].decode(errors="ignore"))


def _own(node: ast.AST, package: str) -> bool:
    """An import of the module's own package (relative, or absolute under ``package``)."""
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] == package
    return isinstance(node, ast.Import) and all(a.name.split(".")[0] == package for a in node.names)


def _ignored_spans(tree: ast.Module, lines: list[str], package: str
                   ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Docstrings, the arguments of raised errors and the package's own imports inside a body (they name code,
    which the closure follows; where it lives is no part of what it computes): none changes a number."""
    nodes: list[ast.AST] = [n for stmt in tree.body if not isinstance(stmt, (ast.Import, ast.ImportFrom))
                            for n in ast.walk(stmt) if _own(n, package)]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                nodes.append(first)
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            nodes += [*node.exc.args, *node.exc.keywords]
    return [((n.lineno, _char_col(lines, n.lineno, n.col_offset)),
             # an import ends with its line (its newline token too); an expression where it ends
             (n.end_lineno, 1 << 30) if isinstance(n, (ast.Import, ast.ImportFrom))
             else (n.end_lineno, _char_col(lines, n.end_lineno, n.end_col_offset))) for n in nodes]


def _tokens(source: str, lines: list[str]) -> list[tuple[tuple[int, int], str]]:
    """(start, normalised text) of each token that carries meaning; an f-string is one token on every Python."""
    out: list[tuple[tuple[int, int], str]] = []
    depth, start = 0, (0, 0)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        kind = tokenize.tok_name[tok.type]
        if kind in _STRING_PARTS:
            if kind.endswith("_START"):
                depth, start = depth + 1, (tok.start if depth == 0 else start)
            elif kind.endswith("_END"):
                depth -= 1
                if depth == 0:
                    out.append((start, _slice(lines, start, tok.end)))
            continue
        if depth or tok.type in _SKIPPED:
            continue
        text = {tokenize.INDENT: "<indent>", tokenize.DEDENT: "<dedent>", tokenize.NEWLINE: "<newline>"}.get(
            tok.type, tok.string)
        out.append((tok.start, text))
    return out


def _slice(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    if start[0] == end[0]:
        return lines[start[0] - 1][start[1]:end[1]]
    return "".join([lines[start[0] - 1][start[1]:], *lines[start[0]:end[0] - 1], lines[end[0] - 1][:end[1]]])


def _binds(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    targets = [t for node in ast.walk(stmt) if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
               for t in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _imports(stmt: ast.stmt, module: str, is_package: bool) -> tuple[tuple[str, str, str | None], ...]:
    if isinstance(stmt, ast.Import):
        return tuple((a.asname or a.name.split(".")[0], a.name if a.asname else a.name.split(".")[0], None)
                     for a in stmt.names)
    if isinstance(stmt, ast.ImportFrom):
        base = stmt.module or ""
        if stmt.level:  # relative: resolved against this module's package
            parts = module.split(".")[: len(module.split(".")) - stmt.level + (1 if is_package else 0)]
            base = ".".join([*parts, *([stmt.module] if stmt.module else [])])
        return tuple((a.asname or a.name, base, a.name) for a in stmt.names if a.name != "*")
    return ()


@functools.lru_cache(maxsize=512)
def parse_units(source: str, module: str = "", is_package: bool = False) -> tuple[Unit, ...]:
    """The units of a module's source (``module``: its dotted name, for relative imports)."""
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    ignored = _ignored_spans(tree, lines, module.split(".")[0])
    tokens = [(pos, text) for pos, text in _tokens(source, lines)
              if not any(a <= pos < b for a, b in ignored)]
    units = []
    for stmt in tree.body:
        first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", ()))])
        start = (first, 0) if first < stmt.lineno else (stmt.lineno, _char_col(lines, stmt.lineno, stmt.col_offset))
        end = (stmt.end_lineno, _char_col(lines, stmt.end_lineno, stmt.end_col_offset))
        text = [t for pos, t in tokens if start <= pos < end]
        while text and text[0] == "<dedent>":  # they close the statement before, at this one's first token
            text.pop(0)
        if not text:  # the module's docstring
            continue
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):  # one unit per name bound: regrouping changes none
            units += [Unit(frozenset({alias}), _sha(f"import|{mod}|{name}|{alias}"), frozenset(), frozenset(),
                           ((alias, mod, name),)) for alias, mod, name in _imports(stmt, module, is_package)]
            continue
        reads = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}
        attributes = {(n.value.id, n.attr) for n in ast.walk(stmt)
                      if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
        nested = tuple(i for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))
                       for i in _imports(n, module, is_package))
        units.append(Unit(frozenset(_binds(stmt)), _sha("\x00".join(text)), frozenset(reads),
                          frozenset(attributes), _imports(stmt, module, is_package), nested))
    return tuple(units)


def source_digest(source: str) -> str:
    """The digest of a whole source text (every unit, in order): what a committed golden value pins."""
    return _sha(FORMAT + "|" + "|".join(u.digest for u in parse_units(source)))[:12]


@functools.cache
def _package_dir(top: str) -> Path | None:
    """The folder of a top-level package, found without importing it."""
    spec = importlib.util.find_spec(top)
    locations = spec.submodule_search_locations if spec is not None else None
    return Path(next(iter(locations))) if locations else None


def _find_source(module: str) -> tuple[str, bool] | None:
    """(source, is_package) of an installed module, read from its file without importing it."""
    top, *rest = module.split(".")
    folder = _package_dir(top)
    if folder is None:
        return None
    for path, is_package in ((folder.joinpath(*rest, "__init__.py"), True),
                             (folder.joinpath(*rest).with_suffix(".py") if rest else None, False)):
        if path is not None and path.is_file():
            return path.read_text(encoding="utf-8"), is_package
    return None


class CodeBase:
    """The source of the modules of ``packages`` (top-level package names) and what their units reach.

    ``read(module)`` gives (source, is_package) or None for a module that does not exist; by default the installed
    files, read once. Tests pass another reader to see what an edit would change."""

    def __init__(self, packages: Iterable[str],
                 read: Callable[[str], tuple[str, bool] | None] | None = None) -> None:
        self.packages = frozenset(packages)
        self._read = functools.cache(read or _find_source)
        self._binder_index: dict[str, dict[str, list[int]]] = {}
        self._edge_index: dict[tuple[str, int], list[tuple[str, int]]] = {}

    def with_package(self, package: str) -> CodeBase:
        return CodeBase({*self.packages, package}, self._read)

    def followed(self, module: str) -> bool:
        return module.split(".")[0] in self.packages

    def units(self, module: str) -> tuple[Unit, ...]:
        found = self._read(module)
        if found is None:
            raise ModuleNotFoundError(f"no source for module {module}")
        return parse_units(found[0], module, found[1])

    def exists(self, module: str) -> bool:
        return self._read(module) is not None

    def _resolve(self, module: str, name: str | None) -> tuple[str, str | None]:
        """What ``from module import name`` names: (module, None) for a module, else (module, name)."""
        if name is not None and self.exists(f"{module}.{name}"):
            return f"{module}.{name}", None
        return module, name

    def _binders(self, module: str) -> dict[str, list[int]]:
        """name -> the units of ``module`` that bind it."""
        if module not in self._binder_index:
            index: dict[str, list[int]] = {}
            for i, unit in enumerate(self.units(module)):
                for name in unit.binds:
                    index.setdefault(name, []).append(i)
            self._binder_index[module] = index
        return self._binder_index[module]

    def _bound(self, module: str, name: str, seen: frozenset[tuple[str, str]] = frozenset()
               ) -> list[tuple[str, int]]:
        """The units of ``module`` that bind ``name`` and, where that is an import (a re-export), what it names."""
        if (module, name) in seen:
            return []
        out = []
        for i in self._binders(module).get(name, ()):
            out.append((module, i))
            for alias, mod, target in self.units(module)[i].imports:
                if alias == name and self.followed(mod):
                    mod, target = self._resolve(mod, target)
                    if target is not None:
                        out += self._bound(mod, target, seen | {(module, name)})
        if not out and self.exists(f"{module}.{name}"):  # a submodule read as an attribute: all of it
            out = [(f"{module}.{name}", i) for i in range(len(self.units(f"{module}.{name}")))]
        return out

    def unit_of(self, module: str, name: str) -> list[tuple[str, int]]:
        found = self._bound(module, name)
        if not found:
            raise LookupError(f"{module} binds no top-level name {name}")
        return found

    def _edges(self, module: str, number: int) -> list[tuple[str, int]]:
        key = (module, number)
        if key in self._edge_index:
            return self._edge_index[key]
        unit, units, out = self.units(module)[number], self.units(module), []
        for name in unit.reads:
            for i in self._binders(module).get(name, ()):
                if i == number:
                    continue
                out.append((module, i))
                out += self._imported(unit, name, units[i].imports)
            out += self._imported(unit, name, unit.nested)  # imported inside its body
        self._edge_index[key] = out
        return out

    def _imported(self, unit: Unit, name: str, imports: Iterable[tuple[str, str, str | None]]
                  ) -> list[tuple[str, int]]:
        """The units that ``imports`` bring in as ``name``, where ``unit`` reads it."""
        out = []
        for alias, mod, target in imports:
            if alias != name or not self.followed(mod):
                continue
            mod, target = self._resolve(mod, target)
            if target is None:  # a module: only what this unit reads of it
                out += [ref for a, attr in unit.attributes if a == name for ref in self._bound(mod, attr)]
            else:
                out += self._bound(mod, target)
        return out

    def closure(self, roots: Iterable[tuple[str, int]], stop: Callable[[str, str], bool] = lambda a, b: False
                ) -> dict[str, set[int]]:
        """module -> the unit numbers ``roots`` reach; ``stop(from_module, to_module)`` cuts an edge."""
        seen: dict[str, set[int]] = {}
        todo = list(roots)
        while todo:
            module, i = todo.pop()
            if i in seen.setdefault(module, set()):
                continue
            seen[module].add(i)
            todo += [(m, j) for m, j in self._edges(module, i) if not stop(module, m)]
        return seen

    def digest(self, module: str, numbers: Iterable[int]) -> str:
        units = self.units(module)
        return _sha(FORMAT + "|" + "|".join(units[i].digest for i in sorted(numbers)))[:12]


def function_fingerprint(fn: Callable, packages: Iterable[str] = ("medssl_core",)) -> str:
    """One digest of the code a function reaches within ``packages`` (and its own package): a cache of what it
    computes keys by it, so that an edit of that code, or of what it calls, misses the old entries. A function
    without a module-level definition to read (a lambda, a nested function) is keyed by its compiled code."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "<lambda>")
    try:
        if module is None or "<" in name:
            raise LookupError(name)
        base = CodeBase({*packages, module.split(".")[0]})
        reached = base.closure(base.unit_of(module, name.split(".")[0]))
    except (LookupError, ModuleNotFoundError, SyntaxError):
        return hashlib.sha256(f"{module}.{name}".encode() + marshal.dumps(fn.__code__)).hexdigest()[:16]
    return _sha("|".join(f"{m}:{base.digest(m, n)}" for m, n in sorted(reached.items())))[:16]
