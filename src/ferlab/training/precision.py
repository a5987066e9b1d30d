"""The numeric precision policy: bfloat16 where the CPU computes it natively, float16 on GPUs."""

from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve(policy: str, gpus: int, flags: set[str] | None = None) -> str:
    """auto -> mixed_float16 on a GPU, mixed_bfloat16 on a bf16-capable CPU, float32 otherwise.

    On CPUs without native bf16 the emulated policy is several times slower than float32.
    """
    if policy != "auto":
        if policy not in ("float32", "mixed_bfloat16", "mixed_float16"):
            raise ValueError(f"train.precision must be auto, float32, mixed_bfloat16 or mixed_float16, not {policy!r}")
        return policy
    if gpus:
        return "mixed_float16"
    flags = cpu_flags() if flags is None else flags
    return "mixed_bfloat16" if any(f in flags for f in BF16_CPU_FLAGS) else "float32"
