"""The import structure: no circle between modules, and no import from a lower package up to a higher one.

The graph is read from the source with ``ast`` (imports inside functions and under ``TYPE_CHECKING`` count);
``python -m tests.import_graph`` prints its layers. A package imports another only from above: the package graph
(modules collapsed onto ``lfpc.<package>`` and the top-level packages, composition roots kept apart) has no circle.
"""

from __future__ import annotations

import textwrap

from tests.import_graph import (COMPOSITION_ROOTS, cycles, imports_of, layers, module_graph, package_graph,
                                project_modules)


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    """Hand-made package: absolute, relative, function-level, ``from pkg import module`` and type-only imports."""
    (tmp_path / "lfpc" / "sub").mkdir(parents=True)
    for name in ("train", "eval"):
        (tmp_path / f"{name}.py").write_text("")
    files = {
        "lfpc/__init__.py": "",
        "lfpc/a.py": "import lfpc.b\n",
        "lfpc/b.py": "def f():\n    from lfpc.sub import c\n",
        "lfpc/sub/__init__.py": "from .c import thing\n",
        "lfpc/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import x\nthing = 1\n",
    }
    for path, text in files.items():
        (tmp_path / path).write_text(textwrap.dedent(text))
    for package in ("experiments", "analysis", "benchmarks"):
        (tmp_path / package).mkdir()
    modules = project_modules(tmp_path)
    found = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert found["lfpc.a"] == {"lfpc.b"}
    assert found["lfpc.b"] == {"lfpc.sub.c"}
    assert found["lfpc.sub"] == {"lfpc.sub.c"}
    assert found["lfpc.sub.c"] == {"lfpc.a"}
    assert cycles(found) == [["lfpc.a", "lfpc.b", "lfpc.sub.c"]]


def test_no_module_imports_itself_through_others():
    graph = module_graph()
    assert "lfpc.training.module" in graph and "lfpc.rewards" in graph["lfpc.training.module"]
    assert cycles(graph) == []
    print(f"{len(graph)} modules in {max(layers(graph).values()) + 1} layers")


def test_no_package_imports_a_higher_one():
    graph = package_graph(module_graph())
    assert cycles(graph) == []
    layer = layers(graph)
    print(f"{len(graph)} packages in {max(layer.values()) + 1} layers")
    # along the data path sample -> prompt -> rollout -> reward -> advantage -> update: the prompt (agent) above the
    # samples, the rollout above the prompt and the reward, GRPO's advantage and update above the rollout, the
    # training loop above them all, and the composition root above everything it composes
    assert layer["lfpc.data"] < layer["lfpc.agent"] < layer["lfpc.rollout"] < layer["lfpc.grpo"] < layer["lfpc.training"]
    assert layer["lfpc.rewards"] < layer["lfpc.rollout"]
    assert layer["lfpc.config"] > max(layer["lfpc.training"], layer["lfpc.resolution"])
    assert set(COMPOSITION_ROOTS) <= set(graph)
