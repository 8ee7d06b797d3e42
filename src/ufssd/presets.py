"""Named presets: one per row of the paper's tables, plus the light CPU ones.

A preset is a :class:`~ufssd.config.DetectorConfig` (a dict of name -> config, no subclasses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ufssd.config import DetectorConfig, ModelConfig, TrainConfig

ALL_LEVELS = (0, 1, 2, 3, 4, 5)
# FEM width of the light backbone [choice] (docs/model.md): its stride-4 width, as VGG-16's 256 is
# conv3_3's; FEM then adds 36 % to the parameters (VGG-16: 24 %) instead of 270 % at 64
LIGHT_FEM_CHANNELS = 24
# v4 candidates (issue 17) against the light backbone's (24, 48, 64, 128, 128, 128) widths,
# (1, 1, 2, 1, 0, 0) stride-1 blocks and top-down fusion into levels 0 and 1
V4_WIDE = (32, 64, 64, 128, 128, 128)  # levels 0-1 a third wider
V4_DEEP = (2, 2, 2, 1, 0, 0)  # one more block at levels 0-1 (+8 px receptive field at stride 4)
V4_FPN = (0, 1, 2, 3, 4)  # top-down into every level (a full FPN path)
V4_SEPHEAD = (0,)  # a depthwise-separable head at stride 4, where the dense head is half the MACs


def _preset(name: str, model: ModelConfig, train: TrainConfig | None = None) -> DetectorConfig:
    return DetectorConfig(name=name, model=model, train=train or TrainConfig())


def _vgg(**kw) -> ModelConfig:
    return ModelConfig(backbone="vgg16", **kw)


def _light(**kw) -> ModelConfig:
    return ModelConfig(backbone="light", fem_channels=LIGHT_FEM_CHANNELS, **kw)


def _fem_mcdm(eta: float, base: Callable[..., ModelConfig] = _vgg) -> ModelConfig:
    """Table 2's MCDM-B row on ``base``: FEM on all levels, MCDM (drop, eta) behind ef_160."""
    return base(fem_levels=ALL_LEVELS, mcdm_mode="drop", mcdm_eta=eta, mcdm_levels=(0,))


PRESETS: dict[str, DetectorConfig] = {
    p.name: p
    for p in [
        # Table 1
        _preset("ufssd_vgg16", _vgg()),
        _preset("ufssd_vgg16_ffmm_x1", _vgg(ffmm_levels=(0,))),
        _preset("ufssd_vgg16_ffmm_x6", _vgg(ffmm_levels=ALL_LEVELS)),
        # Table 2
        _preset("ufssd_vgg16_fem", _vgg(fem_levels=ALL_LEVELS)),
        _preset("ufssd_vgg16_fem_mcdm_b_eta0.10", _fem_mcdm(0.10)),
        _preset("ufssd_vgg16_fem_mcdm_b_eta0.20", _fem_mcdm(0.20)),
        _preset("ufssd_vgg16_fem_mcdm_b_eta0.30", _fem_mcdm(0.30)),
        # Sec. 4.4
        _preset(
            "ufssd_resnet152_fem_mcdm_b_eta0.10",
            ModelConfig(backbone="resnet152", fem_levels=ALL_LEVELS, mcdm_mode="drop", mcdm_eta=0.10),
            TrainConfig(lr=2e-4),
        ),
        # light CPU presets (ours): the rows of Tables 1 and 2 on the light backbone
        _preset("ufssd_light", _light()),
        _preset("ufssd_light_ffmm_x1", _light(ffmm_levels=(0,))),
        _preset("ufssd_light_ffmm_x6", _light(ffmm_levels=ALL_LEVELS)),
        _preset("ufssd_light_fem", _light(fem_levels=ALL_LEVELS)),
        _preset("ufssd_light_fem_mcdm_b_eta0.10", _fem_mcdm(0.10, _light)),
        _preset("ufssd_light_fem_mcdm_b_eta0.20", _fem_mcdm(0.20, _light)),
        _preset("ufssd_light_fem_mcdm_b_eta0.30", _fem_mcdm(0.30, _light)),
        # v4 candidates (issue 17): the default network (FFMM-x1) with one change at the levels
        # that find small faces, or in the neck, and combinations (PAN + deep: depth costs less
        # time than width; FPN or PAN + a separable level-0 head); cost in docs/model.md, accuracy
        # still to be measured
        _preset("ufssd_light_v4_wide", _light(ffmm_levels=(0,), channels=V4_WIDE)),
        _preset("ufssd_light_v4_deep", _light(ffmm_levels=(0,), light_blocks=V4_DEEP)),
        _preset("ufssd_light_v4_fpn", _light(ffmm_levels=(0,), light_topdown=V4_FPN)),
        _preset("ufssd_light_v4_pan", _light(ffmm_levels=(0,), light_topdown=V4_FPN, light_bottomup=True)),
        _preset(
            "ufssd_light_v4_pan_deep",
            _light(ffmm_levels=(0,), light_topdown=V4_FPN, light_bottomup=True, light_blocks=V4_DEEP),
        ),
        # the neck paid for by a separable level-0 head
        _preset(
            "ufssd_light_v4_fpn_sephead",
            _light(ffmm_levels=(0,), light_topdown=V4_FPN, separable_head_levels=V4_SEPHEAD),
        ),
        _preset(
            "ufssd_light_v4_pan_sephead",
            _light(ffmm_levels=(0,), light_topdown=V4_FPN, light_bottomup=True, separable_head_levels=V4_SEPHEAD),
        ),
    ]
}


def list_presets() -> list[str]:
    """Names of every preset, in table order."""
    return list(PRESETS)


def get_preset(name: str) -> DetectorConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def resolve_config(name_or_config: str | DetectorConfig) -> DetectorConfig:
    """A preset name or a config -> a config."""
    if isinstance(name_or_config, DetectorConfig):
        return name_or_config
    if isinstance(name_or_config, str):
        return get_preset(name_or_config)
    raise TypeError(f"expected a preset name or DetectorConfig, got {type(name_or_config).__name__}")


def replace(cfg: DetectorConfig, **sections) -> DetectorConfig:
    """A copy of ``cfg`` with fields of its sections replaced: ``replace(cfg, train={"iters": 10})``."""
    changes = {}
    for section, values in sections.items():
        if isinstance(values, dict):
            changes[section] = dataclasses.replace(getattr(cfg, section), **values)
        else:
            changes[section] = values
    return dataclasses.replace(cfg, **changes)
