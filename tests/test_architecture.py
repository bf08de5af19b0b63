"""The house: every import points down the data's path (config -> checks -> data + particles -> fit ->
diagnostics -> record -> run directory -> report), function-local imports included; no cycle; the
light modules stay light (no torch where a shell completion or a plugin scan imports them, no
Lightning below the job)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# each unit's floor: a module may import its own unit or a unit on a lower floor, never one above
FLOORS = {"cotresnet": 0, "errors": 0, "rundir": 1, "config": 2, "model": 3, "data": 4, "distributed": 4,
          "diagnostics": 5, "record": 6, "job": 7, "sweeps": 8, "report": 9, "train": 10, "api": 11, "studies": 12,
          "hydra_plugins": 13}


def _modules():
    for top in ("cotresnet", "hydra_plugins"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            package = parts[:-1] if parts[-1] != "__init__" else parts
            yield ".".join(p for p in parts if p != "__init__"), package, path


def _unit(module: str) -> str:
    """The package or top-level module of cotresnet a module (or a name imported from one) belongs to."""
    parts = module.split(".")
    if parts[0] == "hydra_plugins":
        return "hydra_plugins"
    top = ROOT / "cotresnet" / parts[1] if len(parts) > 1 else None
    return parts[1] if top is not None and (top.is_dir() or top.with_suffix(".py").is_file()) else "cotresnet"


def _imports(package, path):
    """Every cotresnet module `path` imports, at the top or inside a function: (line, module)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            names = [f"{target}.{a.name}" for a in node.names] if node.module is None else [target]
            yield from ((node.lineno, n) for n in names if n.split(".")[0] == "cotresnet")
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "cotresnet")


def test_every_import_points_down():
    upward = []
    for module, package, path in _modules():
        unit = _unit(module)
        assert unit in FLOORS, f"{module}: unit {unit} has no floor (add it to FLOORS)"
        for line, target in _imports(package, path):
            other = _unit(target)
            assert other in FLOORS, f"{path}:{line} imports {target}, whose unit {other} has no floor"
            if other != unit and FLOORS[other] >= FLOORS[unit]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({unit}) imports {target} ({other})")
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_no_import_cycle():
    """Within a unit too: the graph of module imports (function-local ones included) has no cycle."""
    graph = {}
    modules = {m for m, _, _ in _modules()}
    for module, package, path in _modules():
        graph[module] = set()
        for _, target in _imports(package, path):
            while target not in modules and "." in target:  # `from .x import name` names a module or an attribute
                target = target.rsplit(".", 1)[0]
            if target != module and target in modules and not module.startswith(target + "."):
                graph[module].add(target)
    state, cycle = {}, []

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycle, "import cycles: " + "; ".join(" -> ".join(c) for c in cycle)


def test_no_module_is_over_about_300_lines():
    long = [f"{p.relative_to(ROOT)} ({n})" for _, _, p in _modules() if (n := len(p.read_text().splitlines())) > 320]
    assert not long, f"modules over 320 lines: {', '.join(long)}"


@pytest.mark.parametrize("module, forbidden", [
    ("cotresnet", "torch"), ("cotresnet.train", "torch"), ("cotresnet.config.validate", "torch"),
    ("cotresnet.rundir.ownership", "torch"), ("cotresnet.sweeps.threshold_search", "torch"),
    ("hydra_plugins.cotresnet_sweeper.threshold", "torch"),
    ("cotresnet.record", "lightning"), ("cotresnet.diagnostics", "lightning"), ("cotresnet.model", "lightning"),
    ("cotresnet.data", "lightning"), ("cotresnet.report.diagnose", "lightning"),
])
def test_light_modules_stay_light(module, forbidden):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == '{forbidden}'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing {module} loads {forbidden}: {out.strip()}"
