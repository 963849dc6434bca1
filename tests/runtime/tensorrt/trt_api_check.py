"""Static check: every TensorRT name our code uses exists in each release it can run on.

No TensorRT needed. The API surfaces in tests/runtime/tensorrt/trt_api/ are copies of ../shared/tensorrt_api/
(extracted from the pybind11 bindings of TensorRT 8.6.1, 10.3, 10.13 and 11.1), kept in the
repository so the check also runs on a clean clone.

What counts as a use:
- ``trt.X`` (X must be a module-level name) and ``trt.X.Y`` (Y a member of class/enum X); the
  tensorrt module is always bound to the name ``trt``.
- ``obj.m`` where ``obj`` holds a TensorRT object. Its class is inferred from how it was made
  (``trt.Builder(...)``, ``builder.create_builder_config()``, see RETURNS), from a ``trt.X``
  annotation, or, for a name never assigned in the function (a parameter), from our naming
  convention (CONVENTIONAL: ``config`` is an IBuilderConfig, ``self._engine`` an ICudaEngine...).

``getattr`` / ``hasattr`` / ``setattr`` on the module or a TensorRT object would hide a name from
the check, so they are reported too.

Which versions reach a use: all four, narrowed by version guards that compare
``trt_major(...)`` with an int or ``trt_version(...)`` with a (major, minor) tuple, combined
with ``and`` / ``or`` / ``not``: the body of ``if <guard>:`` is reached by the versions where the
guard can be true, its ``else`` where it can be false, and the statements after an ``if`` whose
body ends in ``raise`` / ``return`` only by the versions where the guard can be false. A condition
that is not a guard narrows nothing. A use fails when a version that reaches it lacks the name.
"""

from __future__ import annotations

import ast
import json
import operator
from dataclasses import dataclass
from pathlib import Path

from eca_deploy.runtime.tensorrt.compat import trt_major, trt_version

ROOT = Path(__file__).resolve().parents[3]
API_DIR = Path(__file__).resolve().parent / "trt_api"
VERSIONS = ("8.6", "10.3", "10.13", "11.1")
TENSORRT_PACKAGE = ROOT / "eca_deploy/runtime/tensorrt"
SOURCES = sorted(TENSORRT_PACKAGE.glob("*.py"))

MODULE = "<module>"
# What a method returns, so chained objects are typed.
RETURNS = {
    ("Builder", "create_network"): "INetworkDefinition",
    ("Builder", "create_builder_config"): "IBuilderConfig",
    ("Builder", "create_optimization_profile"): "IOptimizationProfile",
    ("Builder", "build_serialized_network"): "IHostMemory",
    ("IBuilderConfig", "create_timing_cache"): "ITimingCache",
    ("IBuilderConfig", "get_timing_cache"): "ITimingCache",
    ("ITimingCache", "serialize"): "IHostMemory",
    ("OnnxParser", "get_error"): "ParserError",
    ("Runtime", "deserialize_cuda_engine"): "ICudaEngine",
    ("ICudaEngine", "create_execution_context"): "IExecutionContext",
    ("ICudaEngine", "serialize"): "IHostMemory",
}
CONVENTIONAL = {
    "builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition", "parser": "OnnxParser",
    "profile": "IOptimizationProfile", "timing_cache": "ITimingCache", "runtime": "Runtime",
    "engine": "ICudaEngine", "context": "IExecutionContext", "logger": "Logger",
}
# Severity is bound inside ILogger with export_values(), so trt.Logger.WARNING is real.
NESTED = {"Logger": ("Severity",)}
# Set by tensorrt/__init__.py in Python, not by the bindings the surfaces come from.
MODULE_EXTRAS = {"__version__"}
GUARDS = {"trt_major": trt_major, "trt_version": trt_version}  # the guards, evaluated by the real functions
DYNAMIC = {"getattr", "hasattr", "setattr"}
OPERATORS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
             ast.Eq: operator.eq, ast.NotEq: operator.ne}


@dataclass(frozen=True)
class Use:
    path: str
    line: int
    owner: str  # MODULE for trt.X, else the TensorRT class whose member is used
    member: str
    versions: frozenset

    @property
    def name(self) -> str:
        return f"trt.{self.member}" if self.owner == MODULE else f"{self.owner}.{self.member}"


@dataclass(frozen=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def load_api(directory: Path = API_DIR) -> dict[str, dict[str, set[str]]]:
    api = {}
    for version in VERSIONS:
        surface = json.loads((directory / f"tensorrt-{version}.json").read_text())["api"]
        api[version] = {owner: set(members) for owner, members in surface.items()}
    return api


def _unknown() -> None:
    return None


def _value(node: ast.expr, version: str):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in GUARDS:
        return GUARDS[node.func.id](version)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) and isinstance(e.value, int) for e in node.elts):
        return tuple(e.value for e in node.elts)
    return _unknown


def evaluate(test: ast.expr, version: str) -> bool | None:
    """A guard's truth for ``version``; None where the condition is not (only) a version guard."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in OPERATORS:
        left, right = _value(test.left, version), _value(test.comparators[0], version)
        if left is _unknown or right is _unknown or type(left) is not type(right):
            return None
        return OPERATORS[type(test.ops[0])](left, right)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = evaluate(test.operand, version)
        return None if inner is None else not inner
    if isinstance(test, ast.BoolOp):
        values = [evaluate(v, version) for v in test.values]
        decisive = isinstance(test.op, ast.Or)  # True decides an `or`, False decides an `and`
        if decisive in values:
            return decisive
        return None if None in values else not decisive
    return None


def narrow(reach: frozenset, test: ast.expr, truth: bool) -> frozenset:
    """The versions in ``reach`` for which ``test`` can be ``truth``."""
    return frozenset(v for v in reach if evaluate(test, v) is not (not truth))


def _terminates(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[-1], (ast.Raise, ast.Return))


def _rooted_at_trt(node: ast.expr) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id == "trt"


def _annotation_type(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("trt."):
        return node.value[4:]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trt":
        return node.attr
    return None


class _Types:
    """Classes of local names (None: assigned something that is not TensorRT) and of self attributes."""

    def __init__(self, classes: set[str], local: dict[str, str | None], attrs: dict[str, str | None]):
        self.classes, self.local, self.attrs = classes, local, attrs

    def of(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return self.local[node.id] if node.id in self.local else CONVENTIONAL.get(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            return self.attrs[node.attr] if node.attr in self.attrs else CONVENTIONAL.get(node.attr.lstrip("_"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            if isinstance(base, ast.Name) and base.id == "trt":
                return node.func.attr if node.func.attr in self.classes else None
            return RETURNS.get((self.of(base), node.func.attr))
        return None


def _assignments(scope: ast.AST):
    """(target, value-or-None) for every binding in ``scope``, nested scopes included."""
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                yield target, node.value
        elif isinstance(node, ast.AnnAssign) and _annotation_type(node.annotation):  # `x: trt.X = ...` types x as X
            yield node.target, ast.Call(ast.Attribute(ast.Name("trt"), _annotation_type(node.annotation)), [], [])
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
            yield node.target, node.value
        elif isinstance(node, (ast.For, ast.comprehension)):
            yield node.target, None
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            yield node.optional_vars, node.context_expr


def _infer(scope: ast.AST, types: _Types) -> None:
    """Fill ``types`` from the bindings in ``scope``; repeated so chains (self._engine from self._runtime) settle."""
    for arg in ast.walk(scope):
        if isinstance(arg, ast.arg) and _annotation_type(arg.annotation):
            types.local[arg.arg] = _annotation_type(arg.annotation)
    if isinstance(scope, ast.ClassDef):  # dataclass-style fields: their annotation says what self.<field> holds
        for stmt in scope.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                types.attrs[stmt.target.id] = _annotation_type(stmt.annotation)
    for _ in range(3):
        for target, value in _assignments(scope):
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            kind = types.of(value) if value is not None and len(names) == 1 else None
            for name in names:
                if isinstance(name, ast.Name):
                    types.local[name.id] = kind
                elif isinstance(name, ast.Attribute) and isinstance(name.value, ast.Name) and name.value.id == "self":
                    types.attrs[name.attr] = kind


class _Walker:
    def __init__(self, path: str, classes: set[str]):
        self.path, self.classes = path, classes
        self.uses: list[Use] = []
        self.problems: list[Problem] = []

    def block(self, body: list[ast.stmt], reach: frozenset, types: _Types) -> None:
        for stmt in body:
            if not reach:
                return
            self.stmt(stmt, reach, types)
            if isinstance(stmt, ast.If):
                if _terminates(stmt.body):
                    reach = narrow(reach, stmt.test, False)
                if _terminates(stmt.orelse):
                    reach = narrow(reach, stmt.test, True)

    def stmt(self, stmt: ast.stmt, reach: frozenset, types: _Types) -> None:
        if isinstance(stmt, ast.If):
            self.expr(stmt.test, reach, types)
            self.block(stmt.body, narrow(reach, stmt.test, True), types)
            self.block(stmt.orelse, narrow(reach, stmt.test, False), types)
            return
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in stmt.decorator_list + stmt.args.defaults + stmt.args.kw_defaults:
                if node is not None:
                    self.expr(node, reach, types)
            inner = _Types(self.classes, dict(types.local), types.attrs)
            for arg in stmt.args.args + stmt.args.kwonlyargs + stmt.args.posonlyargs:
                inner.local.pop(arg.arg, None)  # a parameter shadows the outer name: typed by annotation/convention
            _infer(stmt, inner)
            self.block(stmt.body, reach, inner)
            return
        if isinstance(stmt, ast.ClassDef):
            for node in stmt.bases + stmt.decorator_list:
                self.expr(node, reach, types)
            inner = _Types(self.classes, dict(types.local), {})
            _infer(stmt, inner)
            inner.local = dict(types.local)  # method locals are inferred per method; keep the self attributes
            self.block(stmt.body, reach, inner)
            return
        if isinstance(stmt, ast.Assign):
            self._check_trt_binding(stmt)
        for field, value in ast.iter_fields(stmt):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self.block(value, reach, types)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.excepthandler):
                        self.block(item.body, reach, types)
                    elif isinstance(item, ast.AST):
                        self.expr(item, reach, types)
            elif isinstance(value, ast.AST):
                self.expr(value, reach, types)

    def expr(self, node: ast.AST, reach: frozenset, types: _Types) -> None:
        if not reach:
            return
        if isinstance(node, ast.IfExp):
            self.expr(node.test, reach, types)
            self.expr(node.body, narrow(reach, node.test, True), types)
            self.expr(node.orelse, narrow(reach, node.test, False), types)
            return
        if isinstance(node, ast.BoolOp):
            for value in node.values:  # `a and b` reaches b only where a can be true; `a or b` where a can be false
                self.expr(value, reach, types)
                reach = narrow(reach, value, isinstance(node.op, ast.And))
            return
        if isinstance(node, ast.Attribute):
            self._record(node, reach, types)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in DYNAMIC and node.args
                and (_rooted_at_trt(node.args[0]) or types.of(node.args[0]))):
            self.problems.append(Problem(self.path, node.lineno, f"{node.func.id}() on a TensorRT object escapes this "
                                                                 "check; use the name and a version guard"))
        for child in ast.iter_child_nodes(node):
            self.expr(child, reach, types)

    def _record(self, node: ast.Attribute, reach: frozenset, types: _Types) -> None:
        base = node.value
        if isinstance(base, ast.Name) and base.id == "trt":
            owner = MODULE
        elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id == "trt":
            owner = base.attr
        else:
            owner = types.of(base)
            if owner is None:
                return
        self.uses.append(Use(self.path, node.lineno, owner, node.attr, reach))

    def _check_trt_binding(self, stmt: ast.Assign) -> None:
        """The check only follows the tensorrt module under the name ``trt``."""
        value = stmt.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "import_tensorrt":
            if not (len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == "trt"):
                self.problems.append(Problem(self.path, stmt.lineno, "bind import_tensorrt() to the name `trt`"))


def collect(source: str, path: str, api: dict) -> tuple[list[Use], list[Problem]]:
    classes = set().union(*(set(surface) - {MODULE} for surface in api.values()))
    tree = ast.parse(source, filename=path)
    walker = _Walker(path, classes)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "tensorrt" and a.asname != "trt" for a in node.names):
            walker.problems.append(Problem(path, node.lineno, "import tensorrt as trt: the check follows that name"))
    walker.block(tree.body, frozenset(VERSIONS), _Types(classes, {}, {}))
    return walker.uses, walker.problems


def _present(surface: dict[str, set[str]], use: Use) -> bool:
    if use.owner == MODULE:
        return use.member in surface[MODULE] or use.member in MODULE_EXTRAS
    if use.owner not in surface:
        return False
    members = set(surface[use.owner]).union(*(surface.get(n, set()) for n in NESTED.get(use.owner, ())))
    return use.member in members


def check_source(source: str, path: str, api: dict) -> tuple[list[Use], list[Problem]]:
    uses, problems = collect(source, path, api)
    for use in uses:
        missing = [v for v in VERSIONS if v in use.versions and not _present(api[v], use)]
        if missing:
            problems.append(Problem(use.path, use.line, f"{use.name} does not exist in TensorRT {', '.join(missing)}; "
                                                        "guard it with `if trt_major(...) ...`"))
    return uses, problems


def check_files(paths: list[Path] = SOURCES, api: dict | None = None) -> tuple[list[Use], list[Problem]]:
    api = api or load_api()
    uses, problems = [], []
    for path in paths:
        found, wrong = check_source(path.read_text(), str(path.relative_to(ROOT)), api)
        uses += found
        problems += wrong
    return uses, problems


# --- Polygraphy ---------------------------------------------------------------------------------------------
# The builder reaches polygraphy.backend.trt only as ``poly`` (``poly, error = import_polygraphy()``); each
# ``poly.X`` must exist in the installed Polygraphy (its package imports without TensorRT) and each keyword
# a ``poly.X(...)`` call passes must be one X accepts.

POLYGRAPHY = "poly"


def unaccepted(target, args: tuple = (), kwargs: dict | None = None) -> set[str]:
    """The keyword arguments ``target`` (a function, or a class through the ``**kwargs`` its ``__init__``
    forwards to a base, as CreateConfig does) does not take; raises TypeError for bad positionals."""
    import inspect

    kwargs = dict(kwargs or {})
    if not inspect.isclass(target):
        params = inspect.signature(target).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return set()
        inspect.signature(target).bind_partial(*args)
        return set(kwargs) - set(params)
    for klass in target.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        kwargs = {k: v for k, v in kwargs.items()
                  if k not in params or params[k].kind in (params[k].VAR_POSITIONAL, params[k].VAR_KEYWORD)}
        if not kwargs or not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return set(kwargs)


def polygraphy_problems(paths: list[Path] = SOURCES, module=None) -> tuple[list[tuple[str, set]], list[Problem]]:
    """(uses as (name, keywords), problems) for every ``poly.X`` in ``paths`` against ``module``."""
    if module is None:
        import polygraphy.backend.trt as module
    uses, problems = [], []
    for path in paths:
        where = str(path.relative_to(ROOT)) if ROOT in path.parents else str(path)
        tree = ast.parse(path.read_text())
        calls = {id(node.func): node for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                    getattr(node.value.func, "id", None) == "import_polygraphy":
                target = node.targets[0]
                first = target.elts[0] if isinstance(target, ast.Tuple) else target
                if not (isinstance(first, ast.Name) and first.id == POLYGRAPHY):
                    problems.append(Problem(where, node.lineno, "bind import_polygraphy() to `poly, ...`"))
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == POLYGRAPHY):
                continue
            call = calls.get(id(node))
            keywords = {k.arg for k in call.keywords if k.arg} if call else set()
            uses.append((node.attr, keywords))
            target = getattr(module, node.attr, None)
            if target is None:
                problems.append(Problem(where, node.lineno, f"polygraphy.backend.trt.{node.attr} does not exist in "
                                                            f"Polygraphy {_polygraphy_version()}"))
                continue
            wrong = unaccepted(target, (), {k: None for k in keywords}) if call else set()
            if wrong:
                problems.append(Problem(where, node.lineno, f"{node.attr} takes no argument(s) {sorted(wrong)} in "
                                                            f"Polygraphy {_polygraphy_version()}"))
    return uses, problems


def _polygraphy_version() -> str:
    import polygraphy

    return polygraphy.__version__
