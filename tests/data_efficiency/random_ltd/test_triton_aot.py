"""Every Triton kernel of the project compiled ahead of time for sm_80 (A100) and sm_90
(H100), no GPU needed: ``triton.compile`` with an explicit ``GPUTarget`` runs the whole
pipeline down to a cubin with the ``ptxas`` inside the Triton wheel.

The kernels are compiled as the launch wrappers really specialise them: each wrapper is
called on CPU tensors with every ``@triton.jit`` kernel swapped for a recorder, and each
recorded launch goes through Triton's own argument binder (dtypes, 16-divisibility of
sizes and pointers, constexprs such as ``BLOCK_H``). Dtypes fp32 / bf16 / fp16, hidden
sizes 1000 (not a multiple of 16) and 6144 (a multiple, past the largest block). A compile
error or any register spill (local memory, ``LOCAL`` in ``cuobjdump --dump-resource-usage``;
what Triton reports as ``n_spills`` once loaded) fails the test.

Triton caches compiled kernels (``~/.triton/cache``); from cold this compiles 48 variants
in about 10 s on the shared 2-core machine.
"""
import os
import pathlib
import re
import subprocess

import pytest
import torch

triton = pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[3]
CUOBJDUMP = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
ARCHS = (80, 90)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
HIDDEN = (1000, 6144)


def _kernel_modules() -> dict[str, list[str]]:
    """``{module: [kernel names]}`` for every ``@triton.jit`` under megatron/."""
    found = {}
    for path in sorted((ROOT / "megatron").rglob("*.py")):
        names = re.findall(r"@triton\.jit[^\n]*\n\s*def (\w+)", path.read_text())
        if names:
            found[".".join(path.relative_to(ROOT).with_suffix("").parts)] = names
    return found


class _Recorder:
    """Stands in for a kernel: ``kernel[grid](*args, **kwargs)`` records the launch."""

    def __init__(self, name: str, launches: list):
        self.name, self.launches = name, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((self.name, args, kwargs))


def _drive_random_ltd(module, dtype: torch.dtype, h: int) -> None:
    """The random-LTD launch wrappers on small CPU tensors (kept rows 1 and 3 of 4)."""
    full, part = torch.zeros(4, h, dtype=dtype), torch.zeros(2, h, dtype=dtype)
    inv = torch.tensor([-1, 0, -1, 1])
    module.gather_rows(full, torch.tensor([1, 3]))
    module.select_rows(part, full, inv)
    module.select_rows(part, None, inv)
    module.split_rows(full, inv, 2)


DRIVERS = {"megatron.data_efficiency.random_ltd.kernel": _drive_random_ltd}


def _recorded_launches(monkeypatch) -> list[tuple[JITFunction, tuple, dict]]:
    import importlib
    launches, kernels = [], {}
    for name, kernel_names in _kernel_modules().items():
        assert name in DRIVERS, f"{name} has Triton kernels {kernel_names} but no AOT driver here"
        module = importlib.import_module(name)
        for k in kernel_names:
            fn = getattr(module, k)
            # under TRITON_INTERPRET=1 triton.jit made an interpreter function: recompile it
            kernels[k] = fn if isinstance(fn, JITFunction) else JITFunction(fn.fn)
            monkeypatch.setattr(module, k, _Recorder(k, launches))
        for dtype in DTYPES:
            for h in HIDDEN:
                DRIVERS[name](module, dtype, h)
        missed = set(kernel_names) - {k for k, _, _ in launches}
        assert not missed, f"the AOT driver of {name} never launches {sorted(missed)}"
    return [(kernels[k], args, kwargs) for k, args, kwargs in launches]


def _compile(kernel: JITFunction, args: tuple, kwargs: dict, arch: int):
    """Compile one launch as the JIT would for ``sm_{arch}``."""
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound,
                                                              specialization, options)
    src = ASTSource(kernel, signature, constexprs, attrs)
    return triton.compile(src, target=target, options=options.__dict__), signature, constexprs


def _local_memory_bytes(cubin: bytes, tmp_path: pathlib.Path) -> int:
    path = tmp_path / "kernel.cubin"
    path.write_bytes(cubin)
    usage = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(path)],
                           capture_output=True, text=True, check=True).stdout
    return sum(int(v) for v in re.findall(r"\b(?:LOCAL|STACK):(\d+)", usage))


def test_every_triton_kernel_compiles_for_sm80_and_sm90_without_spills(monkeypatch, tmp_path):
    launches = _recorded_launches(monkeypatch)
    seen, compiled = set(), 0
    for kernel, args, kwargs in launches:
        for arch in ARCHS:
            binary, signature, constexprs = _compile(kernel, args, kwargs, arch)
            key = (kernel.__name__, arch, tuple(signature.items()), tuple(constexprs.items()),
                   binary.metadata.hash)
            if key in seen:
                continue
            seen.add(key)
            compiled += 1
            assert binary.metadata.arch == f"sm{arch}"
            spilled = _local_memory_bytes(binary.asm["cubin"], tmp_path)
            assert spilled == 0, (f"{kernel.__name__} sm_{arch} {signature} {constexprs}: "
                                  f"{spilled} bytes of local memory (register spill)")
    # 4 launches (gather, select with/without full, split) x 3 dtypes x 2 sizes x 2 archs
    assert compiled == 48, compiled
    assert os.path.exists(CUOBJDUMP)
