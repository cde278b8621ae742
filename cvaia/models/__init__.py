"""Models: ResNet encoder, ASPP, DeepLabV3+ decoder, attention blocks and the five course models.

``build_model(cfg)`` builds the model a :class:`cvaia.config.Config` names (the registry
:data:`MODELS` lists every model, its tasks and its builder); the builder
functions (``deeplabv3p``, ``deeplabv3p_multitask``, ``adaptive_depth``,
``transformer_multitask``, ``cross_attention_multitask``) take explicit keyword arguments.
Every model has ``tasks`` (tuple) and ``forward(x)`` → ``{"semseg": B×19×H×W logits,
"depth": B×1×H×W metres}`` for its tasks (input sizes divisible by 8).
"""

from .adaptive import AdaptiveDepth, AdaptiveDepthHead, DepthBranch, LatentTransformer
from .aspp import ASPP
from .attention import (
    MLP,
    CrossAttention,
    CrossTransformerBlock,
    LatentsExtractor,
    SelfAttention,
    TransformerBlock,
    set_attention_impl,
)
from .builder import (
    AttentionOptions,
    adaptive_depth,
    cross_attention_multitask,
    deeplabv3p,
    deeplabv3p_multitask,
    depth_branch,
    transformer_multitask,
)
from .decoder import DecoderDeepLabV3p
from .deeplab import DEPTH_RANGE, DeepLabV3p, DeepLabV3pMultiTask
from .encoder import (
    DilatedBasicBlock,
    PretrainedWeightsError,
    ResNetEncoder,
    imagenet_checkpoint_path,
    load_encoder_weights,
    resnet_encoder,
)
from .multitask import (
    ClassTokenSegHead,
    CrossAttentionMultiTask,
    TransformerMultiTask,
    TransformerSegHead,
)
from .registry import BUILDERS, MODEL_NAMES, MODELS, ModelInfo, build_model, task_error

__all__ = [
    "ASPP", "MLP", "AdaptiveDepth", "AdaptiveDepthHead", "AttentionOptions", "BUILDERS", "DepthBranch",
    "MODELS", "MODEL_NAMES", "ModelInfo", "depth_branch", "task_error", "ClassTokenSegHead", "CrossAttention",
    "CrossAttentionMultiTask", "CrossTransformerBlock", "DEPTH_RANGE", "DecoderDeepLabV3p", "DeepLabV3p",
    "DeepLabV3pMultiTask", "DilatedBasicBlock", "LatentTransformer", "LatentsExtractor", "PretrainedWeightsError", "ResNetEncoder",
    "SelfAttention", "TransformerBlock", "TransformerMultiTask", "TransformerSegHead", "adaptive_depth",
    "build_model", "cross_attention_multitask", "deeplabv3p", "deeplabv3p_multitask", "imagenet_checkpoint_path",
    "load_encoder_weights", "resnet_encoder", "set_attention_impl", "transformer_multitask",
]
