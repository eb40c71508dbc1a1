"""The model zoo. Importing this package registers every family with the zoo registry (and timm)."""
from zoo.models.registry import (  # noqa: F401
    FamilyHooks,
    hooks_of,
    ModelEntry,
    Published,
    UnknownModelError,
    create,
    get_entry,
    list_models,
    model_label,
    model_name,
    paper_comparisons,
    published,
    published_variants,
    register,
)

# Each family module registers its models on import. (Helpers append their imports below.)
from zoo.models import mobilevit, aft, deit, pit, coatnet, mobilenetv2  # noqa: E402,F401
# The successors of MobileViT (issue 17), smallest first within each family.
from zoo.models import (  # noqa: E402,F401
    mobilevitv2, fastvit, mobilenetv4, efficientformerv2, efficientvit, swiftformer, repvit,
)
from zoo.models.timm_bridge import register_with_timm; register_with_timm()  # noqa: E402,E702
