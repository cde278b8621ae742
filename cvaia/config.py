"""One configuration object for everything: CLI flags, papermill parameters and run hashes.

The course template's flag names are kept (``--model_name --tasks --optimizer --optimizer_lr
--batch_size --num_epochs …``); cvaia's own options follow them. Each field's metadata says:

- ``help``: the flag's help text;
- ``choices``: allowed values (checked in :meth:`Config.validate`);
- ``hash``: whether the field changes results (and so the run's identity). Fields such as
  ``name``, ``log_dir``, ``workers`` or ``quiet`` do not. ``"nondefault"``: only a value other
  than the default does (fields added later, so that existing runs keep their hashes).

The course template's command lines run unchanged: list flags take space- or comma-separated
values or a JSON list (``--tasks semseg depth``, ``--tasks semseg,depth``,
``--observe_train_ids [0,100]``), booleans take ``yes/no/true/false/t/f/y/n/1/0`` in any case,
``--pretrained true|false`` keeps its course meaning (ImageNet weights, see
:func:`cvaia.weights.course_pretrained`), and the template's daemon flags (TensorBoard, ngrok)
are accepted with a one-line :class:`~cvaia.errors.ConfigNotice`.

Build one with :func:`make_config` (keyword overrides, validated) or from command-line
arguments with :func:`add_config_arguments` + :func:`config_from_args`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import typing
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError, ConfigNotice
from .model_names import ALL_TASKS as TASKS
from .model_names import MODEL_NAMES, task_error

ENCODER_NAMES = ("resnet18", "resnet34")
__all__ = ["Config", "ConfigError", "ENCODER_NAMES", "FIELD_NAMES", "MODEL_NAMES", "TASKS", "add_config_arguments",
           "config_from_args", "config_from_dict", "make_config"]


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _f(default, help: str, *, choices=None, hash: bool = True, factory=False):  # noqa: A002
    meta = {"help": help, "choices": choices, "hash": hash}
    if factory:
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    # ---- run bookkeeping (course names) -------------------------------------------------
    name: str = _f("", "readable run name (default: derived from model and key options)", hash=False)
    log_dir: str = _f("", "run store directory (default: $CVAIA_RUNS_DIR or <repo>/runs)", hash=False)
    dataset_root: str = _f("", "miniscapes-format data root (default: data/miniscapes if present, else data/synthetic)")

    # ---- schedule ------------------------------------------------------------------------
    num_epochs: int = _f(16, "number of training epochs")
    batch_size: int = _f(4, "training batch size")
    batch_size_validation: int = _f(8, "validation batch size", hash=False)
    accumulate_grad_batches: int = _f(1, "accumulate the gradients of N batches per optimizer step "
                                         "(effective batch = batch_size x N x processes)", hash="nondefault")

    # ---- optimiser -----------------------------------------------------------------------
    optimizer: str = _f("sgd", "optimizer", choices=("sgd", "adam"))
    optimizer_lr: float = _f(0.01, "learning rate")
    optimizer_momentum: float = _f(0.9, "SGD momentum")
    optimizer_weight_decay: float = _f(1e-4, "weight decay")
    optimizer_float_16: bool = _f(False, "course flag: fp16 mixed precision (same as --precision fp16)")
    lr_scheduler: str = _f("poly", "learning-rate schedule", choices=("poly", "constant"))
    lr_scheduler_power: float = _f(0.9, "power of the poly schedule")
    grad_clip: float = _f(0.0, "clip the gradient norm to this value (0 = off)")

    # ---- tasks and losses ----------------------------------------------------------------
    tasks: tuple = _f(TASKS, "tasks to train, comma-separated subset of semseg,depth", choices=TASKS)
    loss_weight_semseg: float = _f(0.5, "weight of the cross-entropy loss (1 - w)")
    loss_weight_depth: float = _f(0.5, "weight of the SILog loss (w)")
    loss_weighting: str = _f("fixed", "task weighting: fixed weights, learned uncertainty (Kendall et al.) or DWA",
                             choices=("fixed", "uncertainty", "dwa"))
    silog_lambda: float = _f(0.15, "lambda of the SILog loss")

    # ---- model ---------------------------------------------------------------------------
    model_name: str = _f("deeplabv3p", "model", choices=MODEL_NAMES)
    model_encoder_name: str = _f("resnet18", "encoder backbone", choices=ENCODER_NAMES)
    pretrained: str = _f("random", "encoder weights: random | imagenet (local torch cache only) | synthetic (shipped, see python -m cvaia pretrain) | path to a cvaia checkpoint; course values: true = ImageNet (the shipped synthetic encoder, with a notice, where ImageNet is not cached), false = random")
    encoder_dilation: tuple = _f((False, False, True), "replace_stride_with_dilation for layer2..4, e.g. F,F,T")
    encoder_frozen_bn: bool = _f(False, "freeze the encoder's BatchNorm (torchvision's FrozenBatchNorm2d: "
                                 "the pretrained statistics and scales stay fixed); needs --pretrained weights", hash="nondefault")
    aspp_rates: tuple = _f((3, 6, 9), "ASPP atrous rates, comma-separated (\"\" = no atrous branches)")
    decoder_skip_channels: int = _f(48, "channels of the 1x1 skip projection in the decoder (0 = no skip)")
    decoder_num_convs: int = _f(2, "number of 3x3 convs after the decoder concat (1-3)")
    # adaptive depth / transformer options
    latents_source: str = _f("lowest", "features the adaptive-depth latents come from", choices=("lowest", "decoder", "aspp"))
    pos_embed: str = _f("none", "learned positional embedding", choices=("none", "query", "input"))
    transformer_dim: int = _f(256, "transformer width")
    transformer_reducer: str = _f("linear", "how 512-ch latents are reduced to the transformer width", choices=("linear", "conv"))
    num_heads: int = _f(4, "attention heads")
    expansion: int = _f(4, "MLP expansion factor of the transformer blocks")
    num_transformer_layers: int = _f(2, "number of transformer blocks")
    dropout: float = _f(0.1, "dropout in attention and MLP")
    num_bins: int = _f(64, "adaptive depth bins (latent tokens); must be a perfect square")
    attention_impl: str = _f("fast", "attention path: fast (scaled_dot_product_attention) or explicit softmax(QK^T)V",
                             choices=("fast", "explicit"))
    cross_attention_chunk: int = _f(4096, "pixels per chunk in the cross-attention seg head (bounds memory)")

    # ---- augmentation (course names) ------------------------------------------------------
    aug_input_crop_size: int = _f(256, "training crop size (square)")
    aug_geom_scale_min: float = _f(1.0, "min random scale")
    aug_geom_scale_max: float = _f(1.0, "max random scale")
    aug_geom_tilt_max_deg: float = _f(0.0, "max random rotation in degrees")
    aug_geom_wiggle_max_ratio: float = _f(0.0, "max random corner displacement (perspective), ratio of size")
    aug_geom_reflect: bool = _f(False, "random horizontal flips")

    # ---- data amounts and evaluation -----------------------------------------------------
    max_train_images: int = _f(0, "use only the first N training images (0 = all)")
    max_val_images: int = _f(0, "use only the first N validation images (0 = all)")
    tta_flip: bool = _f(False, "test-time horizontal-flip averaging at evaluation")
    dataset: str = _f("miniscapes", "course flag: the data set format (the folder is --dataset_root)",
                      choices=("miniscapes",), hash=False)
    prepare_submission: bool = _f(False, "after training: predict the test split with the best checkpoint and "
                                         "pack the course grader's archive <run>/submission.zip", hash=False)

    # ---- visualization (course names; TensorBoard image grids) ----------------------------
    num_steps_visualization_first: int = _f(100, "first step with TensorBoard image grids", hash=False)
    num_steps_visualization_interval: int = _f(1000, "steps between TensorBoard image grids", hash=False)
    visualize_num_samples_in_batch: int = _f(8, "training-batch samples shown per grid (0 = none)", hash=False)
    visualize_img_grid_width: int = _f(8, "samples per row of the image grids", hash=False)
    observe_train_ids: tuple = _f((0, 100), "training images whose predictions are shown (JSON list; ids "
                                            "beyond the split are skipped)", hash=False)
    observe_valid_ids: tuple = _f((0, 100), "validation images whose predictions are shown (JSON list)",
                                  hash=False)

    # ---- execution (ours) ----------------------------------------------------------------
    seed: int = _f(0, "random seed")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N | mps", hash=False)
    precision: str = _f("auto", "autocast precision on CUDA: auto (bf16 where the GPU has it, else fp16 with a "
                                "gradient scaler), fp32, bf16 or fp16; other devices train in fp32",
                        choices=PRECISIONS)
    channels_last: bool = _f(True, "channels_last memory format on CUDA (other devices: NCHW)", hash=False)
    sync_batchnorm: bool = _f(False, "SyncBatchNorm across the processes of a multi-GPU (DDP) job; it costs a host "
                                     "synchronisation in every BatchNorm layer's forward (torch's SyncBatchNorm "
                                     "drops empty inputs' statistics with boolean masks: 27 layers in deeplabv3p, "
                                     "34 in deeplabv3p_multitask), so the CPU waits for the GPU that often per step",
                              hash="nondefault")
    dist_timeout: int = _f(1800, "seconds a process of a multi-GPU (torchrun) job waits in a collective for "
                                 "the others (init_process_group's timeout) before the job fails; waiting for "
                                 "another job that holds the run's lock has no timeout", hash=False)
    compile: bool = _f(False, "torch.compile the model", hash=False)
    data_path: str = _f("auto", "auto: preload decoded tensors when they fit, else a DataLoader",
                        choices=("auto", "preload", "loader"), hash=False)
    workers: int = _f(2, "DataLoader workers (loader data path)", hash=False)
    workers_validation: int = _f(2, "threads decoding the validation images of each batch (loader data path)",
                                 hash=False)
    log_every: int = _f(10, "log the training loss every N steps", hash=False)
    quiet: bool = _f(False, "no progress bars", hash=False)

    # ------------------------------------------------------------------------------------
    def validate(self) -> "Config":
        """Check every value; raise :class:`ConfigError` naming the flag and what was expected."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if hints[f.name] is tuple:
                if not isinstance(value, tuple):
                    raise ConfigError(f"--{f.name}: expected a tuple, got {value!r}")
                if choices is not None:
                    for v in value:
                        if v not in choices:
                            raise ConfigError(f"--{f.name}: {v!r} is not one of {', '.join(choices)}")
            elif choices is not None and value not in choices:
                raise ConfigError(f"--{f.name}: {value!r} is not one of {', '.join(map(str, choices))}")
        for f in fields(self):
            value = getattr(self, f.name)
            if hints[f.name] is float and not math.isfinite(value):
                raise ConfigError(f"--{f.name}: expected a finite number, got {value}")
        positive = ("num_epochs", "batch_size", "batch_size_validation", "aug_input_crop_size",
                    "transformer_dim", "num_heads", "expansion", "num_bins",
                    "log_every", "cross_attention_chunk", "accumulate_grad_batches", "dist_timeout",
                    "num_steps_visualization_interval", "visualize_img_grid_width")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name}: expected a positive integer, got {getattr(self, name)}")
        for name in ("max_train_images", "max_val_images", "workers", "num_transformer_layers",
                     "decoder_skip_channels", "workers_validation", "num_steps_visualization_first",
                     "visualize_num_samples_in_batch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name}: expected >= 0, got {getattr(self, name)}")
        for name in ("observe_train_ids", "observe_valid_ids"):
            ids = getattr(self, name)
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
                raise ConfigError(f"--{name}: expected a JSON list of image indices >= 0 like [0,100], got {list(ids)}")
        if self.aug_input_crop_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"--aug_input_crop_size: expected at least {MIN_IMAGE_SIZE} (the encoder's output "
                              f"stride), got {self.aug_input_crop_size}")
        if self.optimizer_lr <= 0:
            raise ConfigError(f"--optimizer_lr: expected > 0, got {self.optimizer_lr}")
        if self.encoder_frozen_bn and self.pretrained in ("random", ""):
            raise ConfigError("--encoder_frozen_bn: needs pretrained encoder weights (--pretrained synthetic, "
                              "imagenet or a path); a randomly initialised encoder with frozen BatchNorm cannot learn")
        if not self.tasks:
            raise ConfigError("--tasks: expected at least one of semseg,depth")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"--tasks: repeated task in {','.join(self.tasks)}")
        if len(self.encoder_dilation) != 3 or not all(isinstance(b, bool) for b in self.encoder_dilation):
            raise ConfigError(f"--encoder_dilation: expected three booleans like F,F,T, got {self.encoder_dilation!r}")
        if not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in self.aspp_rates):
            raise ConfigError(f"--aspp_rates: expected positive integers like 3,6,9 (or \"\" for no atrous "
                              f"branches), got {self.aspp_rates!r}")
        if not 1 <= self.decoder_num_convs <= 3:
            raise ConfigError(f"--decoder_num_convs: expected 1, 2 or 3, got {self.decoder_num_convs}")
        root = int(round(self.num_bins ** 0.5))
        if root * root != self.num_bins:
            raise ConfigError(f"--num_bins: expected a perfect square (e.g. 64, 100, 256), got {self.num_bins}")
        if self.transformer_dim % self.num_heads:
            raise ConfigError(f"--num_heads: transformer_dim {self.transformer_dim} is not divisible by "
                              f"num_heads {self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout: expected 0 <= p < 1, got {self.dropout}")
        for name in ("loss_weight_semseg", "loss_weight_depth"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name}: expected >= 0, got {getattr(self, name)}")
        if self.aug_geom_scale_min <= 0 or self.aug_geom_scale_max < self.aug_geom_scale_min:
            raise ConfigError("--aug_geom_scale_min/--aug_geom_scale_max: expected 0 < min <= max, got "
                              f"{self.aug_geom_scale_min}, {self.aug_geom_scale_max}")
        problem = task_error(self.model_name, self.tasks)  # the model registry's task rules
        if problem:
            raise ConfigError(problem)
        if self.batch_size < 2 and has_image_pooling(self):
            raise ConfigError(f"--batch_size: model {self.model_name} has an ASPP image-pooling branch whose "
                              f"BatchNorm sees one value per channel and image, so training needs at least 2 "
                              f"images per batch (per process); got {self.batch_size} (use --batch_size 2 or "
                              f"more; --accumulate_grad_batches N makes the effective batch larger)")
        return self

    # ---- derived -------------------------------------------------------------------------
    def precision_on(self, device) -> str:
        """The precision training on ``device`` (a ``torch.device`` or a ``--device`` string)
        uses: :func:`resolve_precision` of ``precision`` and ``optimizer_float_16``."""
        kind, bf16 = _device_target(device)
        return resolve_precision(self.precision, self.optimizer_float_16, kind, bf16)

    @property
    def effective_precision(self) -> str:
        """:meth:`precision_on` the device this config trains on *here* (``--device``; ``auto``:
        CUDA when this machine has it). Not part of the run hash (:meth:`hash_dict` holds
        :attr:`precision_request`, which no machine changes); each run records the precision
        it used in ``config.json`` and ``done.json``."""
        return self.precision_on(self.device)

    @property
    def precision_request(self) -> str:
        """The precision asked for, the same on every machine: ``optimizer_float_16`` folded in
        (the course flag means fp16 unless bf16 is asked for); ``fp32`` where ``--device``
        names a device without autocast (``cpu``, ``mps``), whatever ``precision`` says.
        ``auto`` stays ``auto`` (bf16 or fp16 on the GPU the job gets, fp32 without one)."""
        if device_kind(self.device) not in ("auto", "cuda"):
            return "fp32"
        if self.optimizer_float_16 and self.precision in ("auto", "fp32"):
            return "fp16"
        return self.precision

    def channels_last_on(self, device) -> bool:
        """Whether training on ``device`` uses channels_last (``channels_last``, on CUDA only)."""
        return bool(self.channels_last) and _device_target(device)[0] == "cuda"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def hash_dict(self) -> dict[str, Any]:
        """The fields that change results, for the run hash.

        The precision part is :attr:`precision_request`, what was asked for, never what the
        machine hashing the config has (a login node without a GPU and the GPU job it submits
        name the same run folder; the precision a run used is in its ``config.json``):

        - ``auto`` (the default), and any request on ``--device cpu``/``mps``:
          ``precision: fp32`` with no ``autocast`` key — the keys these runs always had, so their
          folders keep their names. The default request is one run wherever it trains: bf16 on
          an Ampere-or-newer GPU, fp16 with a gradient scaler on older ones, fp32 on a CPU;
        - an explicit ``bf16``/``fp16`` (or the course's ``optimizer_float_16``) for a job that
          may run on CUDA (``--device auto``/``cuda``): ``precision`` and ``autocast`` hold it;
          ``fp32`` likewise (``autocast: fp32``): on a GPU these are other runs than the default.

        Encoder weights other than ``random`` add ``pretrained_weights``, the SHA-256 of the
        file (:func:`cvaia.weights.weights_identity`). An empty ``dataset_root`` means "the
        default data set", which is the real miniscapes when it is present and the synthetic set
        otherwise: the hash names which one, so runs on synthetic data are never served once
        real data has been dropped in.
        """
        values = self.to_dict()
        d = {f.name: values[f.name] for f in fields(self)
             if f.metadata.get("hash", True) is True
             or (f.metadata.get("hash") == "nondefault" and getattr(self, f.name) != _DEFAULTS[f.name])}
        request = self.precision_request
        d["precision"] = "fp32" if request == "auto" else request
        d["optimizer_float_16"] = False  # folded into the request
        if request != "auto" and device_kind(self.device) in ("auto", "cuda"):
            d["autocast"] = request
        from . import paths

        if not self.dataset_root:
            d["dataset_root"] = "default:" + paths.default_dataset_root().name
        else:  # the folder itself: "/x/d", "/x/d/" and "d" (from /x) are one data set
            d["dataset_root"] = str(paths.resolve_dataset_root(self.dataset_root))
        if self.pretrained not in ("random", ""):
            # the content of the starting weights, not just their name: new weights behind
            # "synthetic", "imagenet" or the same path never serve runs made from old ones
            from .weights import weights_identity

            d["pretrained_weights"] = weights_identity(self.pretrained, self.model_encoder_name)
        return d

    def config_hash(self, length: int = 10) -> str:
        """Stable hash of :meth:`hash_dict` (sorted-key JSON, sha1)."""
        blob = json.dumps(self.hash_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:length]

    def run_label(self) -> str:
        """Readable prefix of the run directory name."""
        if self.name:
            label = self.name
        else:
            label = f"{self.model_name}_{'+'.join(self.tasks)}_{self.optimizer}_lr{self.optimizer_lr:g}"
        return "".join(c if (c.isalnum() or c in "-_.+") else "-" for c in label)

    def replace(self, **overrides) -> "Config":
        """A validated copy with ``overrides`` applied (values coerced like flags)."""
        return make_config(self, **overrides)


FIELD_NAMES = tuple(f.name for f in fields(Config))


def resolve_precision(precision: str, optimizer_float_16: bool, device_type: str, bf16_supported: bool) -> str:
    """The autocast precision of training: ``fp32`` off CUDA (autocast runs on CUDA only); on
    CUDA the course flag ``optimizer_float_16`` means fp16 unless bf16 is asked for, and
    ``auto`` means bf16 where the GPU supports it, else fp16 (with a gradient scaler)."""
    if device_type != "cuda":
        return "fp32"
    if optimizer_float_16 and precision in ("auto", "fp32"):
        return "fp16"
    if precision == "auto":
        return "bf16" if bf16_supported else "fp16"
    return precision


def device_kind(device) -> str:
    """The kind of device a ``--device`` value (or ``torch.device``) asks for, on any machine:
    ``auto``, ``cuda`` (also ``cuda:N``), ``cpu`` or ``mps``."""
    return str(device).strip().lower().split(":")[0] or "auto"


def _device_target(device) -> tuple[str, bool]:
    """``(device type, bf16 supported)`` of a ``torch.device`` or ``--device`` string, here.

    ``auto`` is CUDA when torch sees a GPU. bf16 needs compute capability 8.0 (Ampere) or
    newer; a CUDA device named on a machine without one is assumed to have it. (What this
    machine has never enters a run hash: :attr:`Config.precision_request`.)
    """
    import torch

    spec = str(device).strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if not spec.startswith("cuda"):
        return spec.split(":")[0], False
    if not torch.cuda.is_available():
        return "cuda", True
    try:
        index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
        return "cuda", torch.cuda.get_device_capability(index) >= (8, 0)
    except (ValueError, RuntimeError, AssertionError):  # no such GPU: --device reports it when training
        return "cuda", True


#: Smallest image side (and crop) the models take: the encoder's output stride.
MIN_IMAGE_SIZE = 32


def has_image_pooling(cfg: "Config") -> bool:
    """Whether the model of ``cfg`` has an ASPP image-pooling branch (every model except the
    adaptive-depth one without ASPP latents): its BatchNorm needs >= 2 images per batch."""
    return cfg.model_name != "adaptive_depth" or cfg.latents_source == "aspp"
_DEFAULTS = {f.name: f.default for f in fields(Config)}


# ---- value coercion ------------------------------------------------------------------------
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def _parse_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int,)) and value in (0, 1):
        return bool(value)
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ConfigError(f"--{name}: expected a boolean (true/false), got {value!r}")


#: Tuple fields holding integers.
_INT_LISTS = ("aspp_rates", "observe_train_ids", "observe_valid_ids")


def _list_items(name: str, value) -> list:
    """A list flag's items: a JSON list (``[0,100]``), or space/comma-separated words
    (``semseg depth``, ``semseg,depth``; ``""`` = none), or a Python sequence."""
    if not isinstance(value, str):
        return list(value)
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"--{name}: expected a JSON list like [0,100], got {value!r}") from None
        if not isinstance(items, list):
            raise ConfigError(f"--{name}: expected a JSON list like [0,100], got {value!r}")
        return items
    return [s for s in re.split(r"[,\s]+", text) if s]


def _coerce_pretrained(value, encoder: str) -> str:
    """``pretrained``: the course's booleans (true = ImageNet, false = random) or a name/path."""
    if isinstance(value, bool) or str(value).strip().lower() in _TRUE | _FALSE:
        if not _parse_bool("pretrained", value):
            return "random"
        from .weights import course_pretrained

        chosen, notice = course_pretrained(encoder)
        if notice:
            warnings.warn(notice, ConfigNotice, stacklevel=4)
        return chosen
    return _coerce("pretrained", str, value)


def _coerce(name: str, kind, value):
    """Coerce a flag string / papermill value / python value to the field's type."""
    try:
        if kind is bool:
            return _parse_bool(name, value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value).strip())
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if kind is tuple:
            items = _list_items(name, value)
            if name == "encoder_dilation":
                return tuple(_parse_bool(name, v) for v in items)
            if name in _INT_LISTS:
                return tuple(_coerce(name, int, v) for v in items)
            return tuple(str(v) for v in items)
    except ConfigError:
        raise
    except (TypeError, ValueError):
        pass
    expected = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                tuple: "a comma-separated list"}[kind]
    raise ConfigError(f"--{name}: expected {expected}, got {value!r}")


def make_config(base: Config | None = None, **overrides) -> Config:
    """Build a validated :class:`Config` from ``base`` (or defaults) and keyword overrides.

    Unknown names raise :class:`ConfigError` listing close matches.
    """
    hints = typing.get_type_hints(Config)
    values = dataclasses.asdict(base) if base is not None else {}
    for key, value in overrides.items():
        if key not in hints:
            import difflib

            close = difflib.get_close_matches(key, FIELD_NAMES, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown config field {key!r}{hint}")
        if key != "pretrained":
            values[key] = _coerce(key, hints[key], value)
    if "pretrained" in overrides:  # after the encoder name: "true" depends on it
        encoder = values.get("model_encoder_name", _DEFAULTS["model_encoder_name"])
        values["pretrained"] = _coerce_pretrained(overrides["pretrained"], encoder)
    return Config(**values).validate()


# ---- argparse ------------------------------------------------------------------------------
def add_config_arguments(parser: argparse.ArgumentParser, only: typing.Iterable[str] | None = None) -> None:
    """Add one ``--flag`` per config field (or per field in ``only``), default = unset."""
    hints = typing.get_type_hints(Config)
    defaults = Config()
    wanted = set(only) if only is not None else None
    group = parser.add_argument_group("configuration (cvaia.config.Config)")
    for f in fields(Config):
        if wanted is not None and f.name not in wanted:
            continue
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        kind = hints[f.name]
        metavar = {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR", tuple: "A,B,..."}[kind]
        choices = f.metadata.get("choices")
        if choices and kind is str:
            metavar = "{" + ",".join(choices) + "}"
        nargs = "?" if kind is bool else ("+" if kind is tuple else None)
        group.add_argument(f"--{f.name}", dest=f.name, default=None, metavar=metavar, type=str,
                           nargs=nargs, const="true" if kind is bool else None,
                           help=f"{f.metadata['help']} (default: {shown})")
    if wanted is None:
        course = parser.add_argument_group("course template flags that do not apply here (accepted, with a notice)")
        for name, (metavar, why) in IGNORED_COURSE_FLAGS.items():
            course.add_argument(f"--{name}", dest=f"_course_{name}", default=None, metavar=metavar,
                                type=str, help=why)
        course.add_argument("--log_to_console", dest="_course_log_to_console", default=None, metavar="BOOL",
                            type=str, help="course flag: progress bars on the console (false = --quiet)")
        course.add_argument("--tensorboard_img_grid_width", dest="_course_tensorboard_img_grid_width",
                            default=None, metavar="INT", type=str,
                            help="older course name of --visualize_img_grid_width")


#: Flags of older course-template variants that cannot apply here, and why.
IGNORED_COURSE_FLAGS = {
    "tensorboard_daemon_start": ("BOOL", "cvaia starts no TensorBoard daemon; run `tensorboard --logdir <store>`"),
    "tensorboard_daemon_port": ("INT", "cvaia starts no TensorBoard daemon (tensorboard --port P)"),
    "ngrok_daemon_start": ("BOOL", "cvaia starts no ngrok tunnel"),
    "ngrok_auth_token": ("STR", "cvaia starts no ngrok tunnel"),
}


def config_from_args(args: argparse.Namespace, base: Config | None = None) -> Config:
    """The config given by parsed flags (only flags that were set override ``base``)."""
    overrides = {name: _flag_value(getattr(args, name)) for name in FIELD_NAMES
                 if getattr(args, name, None) is not None}
    for name, (_, why) in IGNORED_COURSE_FLAGS.items():
        if getattr(args, f"_course_{name}", None) is not None:
            warnings.warn(f"--{name}: ignored ({why})", ConfigNotice, stacklevel=2)
    console = getattr(args, "_course_log_to_console", None)
    if console is not None and "quiet" not in overrides:
        overrides["quiet"] = not _parse_bool("log_to_console", console)
    width = getattr(args, "_course_tensorboard_img_grid_width", None)
    if width is not None and "visualize_img_grid_width" not in overrides:
        overrides["visualize_img_grid_width"] = width
    return make_config(base, **overrides)


def _flag_value(value):
    """A parsed flag: list flags (``nargs="+"``) become one space-separated string."""
    return " ".join(value) if isinstance(value, list) else value


def config_from_dict(d: dict[str, Any]) -> Config:
    """Inverse of :meth:`Config.to_dict` (e.g. a stored run's config.json)."""
    return make_config(None, **d)
