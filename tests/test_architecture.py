"""The codebase's shape: stages share only gpufleet (import-linter), and each concept has one type."""
import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gpufleet", "planner", "serving", "loadtests", "infra")


def _lint_imports(config: Path | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency: pip install -e '.[test]'"
    args = [exe] + (["--config", str(config)] if config else [])
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_linter_contracts_are_kept():
    run = _lint_imports()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout
    # Every contract of pyproject.toml was checked, the planner's inner layers among them.
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert "layers" in {c["type"] for c in contracts}
    for contract in contracts:
        assert f"{contract['name']} KEPT" in run.stdout, contract["name"]


def test_import_linter_sees_the_imports_it_checks(tmp_path):
    """The same tool fails a contract the code breaks on purpose: planner does import gpufleet."""
    config = tmp_path / "broken.toml"
    config.write_text('[tool.importlinter]\nroot_packages = ["gpufleet", "planner"]\n\n'
                      '[[tool.importlinter.contracts]]\nname = "deliberately broken"\ntype = "forbidden"\n'
                      'source_modules = ["planner"]\nforbidden_modules = ["gpufleet"]\n')
    run = _lint_imports(config)
    assert run.returncode != 0 and "BROKEN" in run.stdout


def _classes_with_fields(fields: set[str]):
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    declared = {t.target.id for t in node.body
                                if isinstance(t, ast.AnnAssign) and isinstance(t.target, ast.Name)}
                    if declared & fields:
                        yield f"{path.relative_to(ROOT)}:{node.name}", declared & fields


def test_one_type_holds_the_triton_batching_config():
    found = dict(_classes_with_fields({"max_batch_size", "max_queue_delay_microseconds", "max_queue_delay_us",
                                       "preferred_batch_sizes"}))
    assert list(found) == ["gpufleet/contracts/triton.py:BatchingConfig"], found


def test_one_type_holds_the_autoscaling_spec():
    found = dict(_classes_with_fields({"scrape_interval_s", "rate_window_s", "hpa_sync_s"}))
    assert list(found) == ["gpufleet/contracts/autoscaling.py:AutoscalingSpec"], found


def test_one_strict_base():
    stricts = [f"{p.relative_to(ROOT)}" for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if "class _Strict" in p.read_text()]
    assert not stricts, stricts


def test_infra_never_reads_a_catalog():
    """The stack is built from the plan alone: a plan made from a refreshed catalog needs no catalog file."""
    for path in (ROOT / "infra").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "catalog" not in (node.module or ""), f"{path}: imports {node.module}"


def _private_imports():
    """Every use of another module's private name (``from m import _x``, ``m._x``), as 'file:line: m._x'."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            ours = set()  # local names bound by an import of ours (import m, import m as n, from pkg import m)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                    for alias in node.names:
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            yield f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name}"
                        ours.add(alias.asname or alias.name)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.split(".")[0] in PACKAGES:
                            ours.add(alias.asname or alias.name.split(".")[0])
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                        and isinstance(node.value, (ast.Name, ast.Attribute))):
                    dotted = ast.unparse(node.value)
                    head = dotted.split(".")[0]
                    if head in ours or head in PACKAGES:
                        yield f"{path.relative_to(ROOT)}:{node.lineno}: {dotted}.{node.attr}"


def test_no_module_uses_another_modules_private_names():
    """A name with a leading underscore is its module's own: a stage another module needs is public, named for what
    it does, so that it can be found, tested and kept."""
    found = list(_private_imports())
    assert not found, "\n".join(found)
