"""The layers: nothing under mtl_envs/ imports the harness, the agents or the baselines; the
runners (agents/, baselines/) build on the harness's run core only; the harness reaches the
runners only through the registry's import strings; and no module-level import cycle exists
anywhere in the project."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mtl_envs", "harness", "agents", "baselines")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imported(tree: ast.AST, module: str, is_package: bool, module_level: bool) -> set[str]:
    """Modules named by the import statements of ``tree`` (only those run at import time
    when ``module_level``: function bodies are skipped)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    base = module.split(".")
                    base = base if is_package else base[:-1]
                    base = base[: len(base) - child.level + 1]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                names.add(prefix)
                names.update(f"{prefix}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return names


def test_the_env_package_imports_nothing_above_it():
    offenders = []
    for name, path in project_modules().items():
        if not name.startswith("mtl_envs"):
            continue
        tree = ast.parse(path.read_text())
        for target in imported(tree, name, path.name == "__init__.py", module_level=False):
            if target.split(".")[0] in ("harness", "agents", "baselines"):
                offenders.append(f"{name} imports {target}")
    assert not offenders, offenders


# What a runner may use of the harness: its config, result schema, recording, lifecycle and
# the registry's tables (which options a method reads). The commands above them (CLI,
# compare, probe, sweep, benchmarks) are not for runners.
RUN_CORE = {"config", "results", "recording", "lifecycle", "registry"}


def test_runners_use_only_the_harness_run_core_and_the_harness_names_no_runner():
    offenders = []
    for name, path in project_modules().items():
        top = name.split(".")[0]
        tree = ast.parse(path.read_text())
        targets = imported(tree, name, path.name == "__init__.py", module_level=False)
        for target in targets:
            parts = target.split(".")
            runner = top in ("agents", "baselines")
            if runner and parts[0] == "harness" and len(parts) > 1 and parts[1] not in RUN_CORE:
                offenders.append(f"{name} imports {target}")
            if top == "harness" and parts[0] in ("agents", "baselines"):
                offenders.append(f"{name} imports {target}")
    assert not offenders, offenders


def test_no_module_level_import_cycles():
    modules = project_modules()
    graph = {
        name: {
            target
            for target in imported(
                ast.parse(path.read_text()), name, path.name == "__init__.py", True
            )
            if target in modules and target != name
        }
        for name, path in modules.items()
    }
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles
    assert "harness.registry" in graph["harness.cli"]  # the graph sees real edges


def test_the_two_former_cycles_stay_gone():
    # CLI <-> sweep (both through function-level imports) and learner <-> weighting rules
    # (a type-only import): counted at any depth.
    modules = project_modules()

    def imports(name: str) -> set[str]:
        path = modules[name]
        return imported(ast.parse(path.read_text()), name, False, module_level=False)

    assert not (
        {"harness.cli"} & imports("harness.sweep") and {"harness.sweep"} & imports("harness.cli")
    )
    assert not any(
        t.startswith("mtl_envs.training.multitask_learner")
        for t in imports("mtl_envs.training.weighting")
    )


def test_importing_the_package_registers_ids_and_loads_no_torch():
    """``import mtl_envs`` registers the ids and nothing else: torch, data and networks wait
    for ``gym.make``."""
    import subprocess
    import sys

    code = (
        "import sys, gymnasium as gym, mtl_envs\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'LossWeighting-Cubic-v1' in gym.registry\n"
        "gym.make('LossWeighting-Cubic-v1')\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_the_command_line_and_result_reading_load_no_torch():
    """``mtl-envs --help``, ``list`` and ``compare`` read configs and JSON results only: they
    start without torch (a second or more of import time)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import harness.cli, harness.compare, harness.results, mtl_envs.io\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "from harness.results import load_results\n"
        "load_results(['docs/results/quickstart'])\n"
        "assert 'torch' not in sys.modules, 'torch imported by reading results'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
