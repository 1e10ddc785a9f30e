"""The public surface is pinned: every public name is exported from one documented place."""

from __future__ import annotations

import importlib

import pytest

import brownout

PUBLIC_MODULES = [
    "brownout",
    "brownout.guard",
    "brownout.errors",
    "brownout.events",
    "brownout.testing",
    "brownout.stores",
    "brownout.asgi",
    "brownout.faults",
    "brownout.model",
    "brownout.probe",
    "brownout.report",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_complete(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=lambda s: (not s.isupper(), s)) or exported == sorted(
        exported
    )
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is in __all__ but missing"
    public = {a for a in vars(module) if not a.startswith("_") and _ours(getattr(module, a))}
    assert public - set(exported) == set(), f"{name} defines public names it does not export"


def _ours(obj: object) -> bool:
    """Classes and functions defined by brownout (imports from elsewhere are not surface)."""
    if type(obj).__name__ == "module":
        return False
    return str(getattr(obj, "__module__", "")).startswith("brownout")


def test_top_level_surface_is_pinned() -> None:
    assert set(brownout.__all__) >= {
        "Pipeline",
        "Timeout",
        "Retry",
        "RetryBudget",
        "Hedge",
        "Fallback",
        "deadline",
        "remaining",
    }


def test_every_public_name_has_one_home() -> None:
    """A class is defined in a private module and exported from its package."""
    for name in brownout.__all__:
        obj = getattr(brownout, name)
        module = getattr(obj, "__module__", "")
        if module and isinstance(obj, type):
            assert module.startswith("brownout."), (name, module)
            last = module.rsplit(".", 1)[-1]
            assert last.startswith("_") or module in PUBLIC_MODULES, (name, module)


def test_layers_guard_imports_no_other_pillar() -> None:
    import ast
    import pathlib

    root = pathlib.Path(brownout.__file__).parent / "guard"
    allowed_parents = {"_clock", "_validate", "errors", "events", "units"}
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                target = (node.module or "").split(".")[0]
                names = [a.name for a in node.names]
                assert (target in allowed_parents) or (
                    target == "" and set(names) <= allowed_parents
                ), f"{path.name} imports ..{target} {names}"
